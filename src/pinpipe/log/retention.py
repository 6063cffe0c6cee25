"""Retention of the embedded log: delete whole closed segments that are too old or over the size bound — never
one holding a record that a consumer group has not committed.

Who calls what: the writer process (the one holding ``writer.lock``: ``pinpipe api``) runs a
:class:`~pinpipe.log.retention_runner.RetentionRunner`, which calls :func:`apply` when it takes the lock, then —
by the size rule alone (``size_only``) — **in every roll, on the writer thread**, before the writer takes its
next batch, and in full on its own thread after every roll and every ``log.retention_check_ms``. ``pinpipe log
retention`` calls :func:`plan` (``--dry-run``: what a pass would delete now, and what is held back) and
:func:`apply` (a pass from the command line — it takes the writer lock, so it runs only while no API writes).

One pass, per partition (segments oldest first; the active, last, segment is never deleted):

1. a closed segment is **due** when its newest record is older than ``retention_ms`` (``-1``: never), or while
   the closed segments plus room for two more (``2 × segment_bytes``) exceed ``retention_bytes`` (``-1``:
   unlimited), data and index counted;
2. a due segment is deleted only if it ends at or below the **floor**: the lowest position committed for the
   partition by any consumer group of the topic (a group that committed the topic but not this partition counts
   as position 0), and by the *required* groups (``log.retention_groups``: the sink's and the stream's) even
   before their first commit — so nothing is deleted before the sink has landed it, though it never started. A
   required group that never commits (a deployment without the stream job) holds records back until the
   partition's oldest record is ``group_expiry_ms`` old. A group whose commit file was last written
   more than ``group_expiry_ms`` ago (wall clock; ``-1``: never) is *expired* and no longer holds retention back
   (Kafka's ``offsets.retention.minutes``; a warning names it once per process). The first due segment that a
   group holds back stops the pass for that partition, and a warning names the group, its position and the
   partition's bytes against the bound (once per segment held);
3. what the deleted segments held (counts per key class, timestamps, bytes: :mod:`pinpipe.log.segment_summary`,
   counted by the retention thread once after each segment closed, or read now when that count is missing or
   does not check out) is appended to the partition's ``retired.json`` (:mod:`pinpipe.log.retired`) with the new
   log start, **durably**; only then are the files unlinked and the directory fsynced. A crash after the manifest
   and before the unlink leaves files that readers ignore and the writer deletes when it next opens; a crash
   before leaves everything as it was. So a pass reads no segment: it writes the manifest, fsyncs and unlinks.

**What ``retention_bytes`` guarantees** (``R``; ``S`` = ``segment_bytes``; ``R ≥ 2S``, as the settings check).
The roll's pass runs after the batch that rolled is written and acknowledged and before the next batch is
written, and leaves the closed segments at most ``R − 2S``; between rolls nothing grows but the active segment,
which rolls at the first batch that finds it at ``S`` or more. So at every instant a partition's data and index
weigh at most ``R − S + b₁ + b₂`` — ``b₁`` the batch that last grew the segment that just closed, ``b₂`` the one
that rolled it (one group-commit batch to the partition each) — which is **at most R whenever two consecutive
batches to the partition together are at most S** (over it by their excess otherwise; at the default ``S`` of
128 MiB, more than 64 MiB would have to arrive for one partition within one fsync), independent of timing: the
writer cannot outrun the rule, since it is the writer that runs it.
This holds while every consumer group has committed the segments the rule picks: a group that lags holds them
(and the bound gives way, with a warning) until a later pass. Not counted: ``retired.json`` and a summary of a
few hundred bytes per segment. The price of a cap: a partition keeps at most ``R − S`` of closed data, where Kafka
keeps at least ``retention.bytes`` and exceeds it by the active segment and by what arrives between its checks.
A roll that deletes delays the next batch by the deletion (a manifest write and two fsyncs: milliseconds); one
whose segment to delete has no summary yet reads that segment on the writer thread first (after a crash between
a roll and its count, on a log written before summaries, or with ``R`` below ``3S``, when the segment just closed
is due at once: about 0.1 s per 8 MiB).

Time is the writer's clock (``clock``, milliseconds; record timestamps come from it too), so tests and
``bench/retention.py`` compress a day into minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pinpipe.config import LogSettings
from pinpipe.log import segment
from pinpipe.log.commits import FileCommitStore
from pinpipe.log.integrity import fsync_dir, skipped_offsets
from pinpipe.log.retired import Retired, read_retired, write_retired
from pinpipe.log.segment_summary import summary_for
from pinpipe.telemetry.logs import get_logger

log = get_logger("log.retention")

DAY_MS = 24 * 3600 * 1000
Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RetentionPolicy:
    """When segments roll and when they are deleted (``LogSettings`` holds the same fields, documented there)."""

    segment_bytes: int = 128 << 20
    segment_ms: int | None = 7 * DAY_MS
    retention_ms: int = 7 * DAY_MS
    retention_bytes: int = -1
    retention_check_ms: int = 300_000
    group_expiry_ms: int = 7 * DAY_MS
    groups: tuple[str, ...] = ("pinpipe-sink", "pinpipe-stream")
    """Groups that hold records back even before their first commit (``log.retention_groups``)."""

    @property
    def deletes(self) -> bool:
        return self.retention_ms >= 0 or self.retention_bytes >= 0

    @classmethod
    def from_settings(cls, settings: LogSettings) -> RetentionPolicy:
        return cls(
            segment_bytes=settings.segment_bytes,
            segment_ms=None if settings.segment_ms < 0 else settings.segment_ms,
            retention_ms=settings.retention_ms,
            retention_bytes=settings.retention_bytes,
            retention_check_ms=settings.retention_check_ms,
            group_expiry_ms=settings.group_expiry_ms,
            groups=tuple(settings.retention_groups),
        )


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as a pass sees it: offsets ``[base, end)``, bytes on disk, newest record's time."""

    base: int
    end: int
    bytes: int
    last_ts_ms: int | None
    first_ts_ms: int | None = None


@dataclass(frozen=True)
class Due:
    """A segment a pass deletes (``held_by`` None) or would delete but a group holds back."""

    topic: str
    partition: int
    segment: SegmentInfo
    reason: Literal["age", "size"]
    held_by: tuple[str, int] | None = None
    """(group, committed position) that holds it back."""


@dataclass
class PassResult:
    """What one pass decided (and, unless planning, did), per partition."""

    deleted: list[Due] = field(default_factory=list)
    held: list[Due] = field(default_factory=list)
    bytes: dict[tuple[str, int], int] = field(default_factory=dict)
    """Bytes of each partition after the pass."""
    read: int = 0
    """Deleted segments the pass had to read (no summary that checks out: see :func:`retire`)."""


def describe(directory: Path) -> list[SegmentInfo]:
    """The segments the partition in ``directory`` serves, oldest first (the last is the active one; a segment
    unlinked meanwhile, by the writer's pass while a dry run looks, is left out)."""
    start = read_retired(directory).log_start
    bases = [b for b in segment.list_segments(directory) if b >= start]
    out: list[SegmentInfo] = []
    for i, base in enumerate(bases):
        try:
            info = _segment_info(directory, base, bases[i + 1] if i + 1 < len(bases) else None)
        except FileNotFoundError:
            continue
        out.append(info)
    return out


def _segment_info(directory: Path, base: int, following: int | None) -> SegmentInfo:
    data_path, index_path = segment.segment_paths(directory, base)
    head_size, entry = segment.RECORD_HEAD.size, segment.ENTRY.size
    with open(index_path, "rb") as ix, open(data_path, "rb") as fh:  # the last entry only: never whole indexes
        index_size = os.fstat(ix.fileno()).st_size
        count = index_size // entry
        tail = os.pread(ix.fileno(), entry, (count - 1) * entry) if count else b""
        size = os.fstat(fh.fileno()).st_size + index_size
        last = os.pread(fh.fileno(), head_size, segment.ENTRY.unpack(tail)[0]) if len(tail) == entry else b""
        first = os.pread(fh.fileno(), head_size, 0) if count else b""
    last_ts = segment.RECORD_HEAD.unpack(last)[3] if len(last) == head_size else None
    first_ts = segment.RECORD_HEAD.unpack(first)[3] if len(first) == head_size else None
    return SegmentInfo(base, following if following is not None else base + count, size, last_ts, first_ts)


def _due(
    seg: SegmentInfo, projected: int, now_ms: int, policy: RetentionPolicy, size_only: bool
) -> Literal["age", "size"] | None:
    aged = policy.retention_ms >= 0 and seg.last_ts_ms is not None and now_ms - seg.last_ts_ms > policy.retention_ms
    if aged and not size_only:
        return "age"
    if policy.retention_bytes >= 0 and projected > policy.retention_bytes:
        return "size"
    return None


def floors(
    commits: FileCommitStore,
    topic: str,
    partitions: int,
    expiry_ms: int,
    warned: set[str] | None = None,
    required: tuple[str, ...] = (),
    ages_ms: Mapping[int, int | None] | None = None,
) -> dict[int, tuple[int, str]]:
    """Per partition, the lowest position any live group committed on ``topic`` and that group. A ``required``
    group that never committed the topic stands at 0, until the partition's oldest record is ``expiry_ms`` old
    (``ages_ms``: the age of each partition's oldest record, by the writer's clock)."""
    out: dict[int, tuple[int, str]] = {}
    now_s = time.time()
    seen = commits.groups(topic)
    for group in (g for g in required if g not in seen):
        for p in range(partitions):
            age = (ages_ms or {}).get(p)
            if expiry_ms >= 0 and age is not None and age > expiry_ms:
                continue  # it never came: its claim expired with the records it could have read
            if p not in out:
                out[p] = (0, group)
    for group, (positions, written_s) in sorted(seen.items()):
        age_ms = (now_s - written_s) * 1000
        if expiry_ms >= 0 and age_ms > expiry_ms:
            if warned is not None and group not in warned:
                warned.add(group)
                log.warning(
                    "consumer group expired: it no longer holds retention back",
                    extra={
                        "fields": {
                            "group": group,
                            "topic": topic,
                            "last_commit_age_s": round(age_ms / 1000),
                            "group_expiry_ms": expiry_ms,
                        }
                    },
                )
            continue
        for p in range(partitions):
            pos = positions.get(p, 0)
            if p not in out or pos < out[p][0]:
                out[p] = (pos, group)
    return out


def plan_partition(
    topic: str,
    partition: int,
    segments: list[SegmentInfo],
    floor: tuple[int, str] | None,
    now_ms: int,
    policy: RetentionPolicy,
    size_only: bool = False,
) -> tuple[list[Due], Due | None, int]:
    """(segments to delete, the first due one a group holds back, bytes left) for one partition (``size_only``:
    by the size rule alone, as the pass a roll runs)."""
    total = sum(s.bytes for s in segments)
    if len(segments) < 2 or not (policy.retention_bytes >= 0 if size_only else policy.deletes):
        return [], None, total
    closed = total - segments[-1].bytes
    out: list[Due] = []
    for seg in segments[:-1]:
        reason = _due(seg, closed + 2 * policy.segment_bytes, now_ms, policy, size_only)
        if reason is None:
            break
        if floor is not None and seg.end > floor[0]:
            return out, Due(topic, partition, seg, reason, (floor[1], floor[0])), total
        out.append(Due(topic, partition, seg, reason))
        total -= seg.bytes
        closed -= seg.bytes
    return out, None, total


def retire(directory: Path, topic: str, partition: int, due: list[Due], skipped: frozenset[int], now_ms: int) -> int:
    """Record ``due`` (consecutive oldest segments) in the manifest durably, then unlink them; how many had to be
    read. What each held comes from its summary (:mod:`pinpipe.log.segment_summary`: counted after it closed, or
    read now if that summary is missing or does not check out)."""
    if not due:
        return 0
    counted = [
        summary_for(directory, topic, partition, s.base, s.end, s.bytes, skipped) for s in (d.segment for d in due)
    ]
    entries = [summary.retired(now_ms) for summary, _ in counted]
    read = sum(1 for _, was_read in counted if was_read)
    old = read_retired(directory)
    write_retired(directory, Retired(due[-1].segment.end, old.segments + tuple(entries)))
    for d in due:
        segment.delete_segment(directory, d.segment.base)
    fsync_dir(directory)
    log.info(
        "retired segments",
        extra={
            "fields": {
                "topic": topic,
                "partition": partition,
                "segments": len(due),
                "records": sum(e.records for e in entries),
                "bytes": sum(e.bytes for e in entries),
                "log_start": due[-1].segment.end,
                "reason": due[-1].reason,
                "read": read,
            }
        },
    )
    return read


def plan(
    log_dir: Path,
    topics: Mapping[str, int],
    policy: RetentionPolicy,
    now_ms: int,
    commits: FileCommitStore | None = None,
    warned: set[str] | None = None,
    size_only: bool = False,
) -> PassResult:
    """What a pass would do now (nothing is changed; ``size_only``: by the size rule alone)."""
    commits = commits or FileCommitStore(log_dir / "commits")
    result = PassResult()
    for topic, n in sorted(topics.items()):
        described = {p: describe(log_dir / topic / str(p)) for p in range(n)}
        ages = {
            p: now_ms - s[0].first_ts_ms if s and s[0].first_ts_ms is not None else None for p, s in described.items()
        }
        lows = floors(commits, topic, n, policy.group_expiry_ms, warned, policy.groups, ages)
        for p in range(n):
            segments = described[p]
            delete, held, left = plan_partition(topic, p, segments, lows.get(p), now_ms, policy, size_only)
            result.deleted += delete
            if held is not None:
                result.held.append(held)
            result.bytes[(topic, p)] = left
    return result


def apply(
    log_dir: Path,
    topics: Mapping[str, int],
    policy: RetentionPolicy,
    now_ms: int,
    commits: FileCommitStore | None = None,
    warned: set[str] | None = None,
    size_only: bool = False,
) -> PassResult:
    """One pass: plan, then retire what is due per partition (the caller holds the writer lock; ``size_only``:
    by the size rule alone, as the pass a roll runs on the writer thread)."""
    result = plan(log_dir, topics, policy, now_ms, commits, warned, size_only)
    skips = skipped_offsets(log_dir) if result.deleted else {}
    by_tp: dict[tuple[str, int], list[Due]] = {}
    for d in result.deleted:
        by_tp.setdefault((d.topic, d.partition), []).append(d)
    for (topic, p), due in by_tp.items():
        result.read += retire(log_dir / topic / str(p), topic, p, due, skips.get((topic, p), frozenset()), now_ms)
    return result
