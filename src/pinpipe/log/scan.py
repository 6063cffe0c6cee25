"""``pinpipe log verify`` and ``pinpipe log repair`` over an embedded log directory: :func:`verify` checks every
indexed record of every segment of every partition (from its log start: retired records are gone, their counts are
in ``retired.json``) and every group's committed position; :func:`repair` skips records an operator names,
recording them in ``skipped.json`` (see :mod:`pinpipe.log.integrity`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pinpipe.errors import ConfigError, NotFoundError
from pinpipe.log.commits import FileCommitStore
from pinpipe.log.integrity import (
    CORRUPT_FILE,
    NOTE_LOCK,
    SKIPPED_FILE,
    now_text,
    read_entries,
    skipped_offsets,
    write_json_atomically,
)
from pinpipe.log.recovery import check_partition


@dataclass
class PartitionCheck:
    """What :func:`verify` found in one partition."""

    topic: str
    partition: int
    records: int
    """Indexed records from the log start to the end."""
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    """(offset, reason) of every indexed record that does not check out and was not skipped."""
    skipped: int = 0
    lost_tail: tuple[int, int, str] | None = None
    """(first, end, group): offsets a consumer group committed past the end of the partition (lost records)."""
    log_start: int = 0
    end: int = 0


def verify(directory: Path) -> list[PartitionCheck]:
    """Check every indexed record of every partition, and every group's committed position against the end.

    Notes what it found in ``corrupt.json`` (replacing the old notes, so a repaired log reads healthy again)."""
    if not (directory / "topics.json").exists():
        raise NotFoundError(
            f"{directory} is not an event log (it has no topics.json)", hint="check --log", location=str(directory)
        )
    topics = {str(t): int(n) for t, n in orjson.loads((directory / "topics.json").read_bytes()).items()}
    commits = FileCommitStore(directory / "commits")
    skips = skipped_offsets(directory)
    out: list[PartitionCheck] = []
    for topic, n in sorted(topics.items()):
        highest = commits.highest(topic)
        for p in range(n):
            skipped = skips.get((topic, p), frozenset())
            start, records, corrupt = check_partition(directory / topic / str(p), topic, p)
            check = PartitionCheck(topic, p, records - start, [(o, r) for o, r in corrupt if o not in skipped])
            check.log_start, check.end = start, records
            check.skipped = sum(1 for o in skipped if start <= o < records)
            group_pos = highest.get(p)
            end = records
            while end in skipped:  # lost offsets an operator already skipped
                end += 1
            if group_pos is not None and group_pos[0] > end:
                check.lost_tail = (end, group_pos[0], group_pos[1])
            out.append(check)
    found = [(c.topic, c.partition, o, r) for c in out for o, r in c.corrupt]
    found += [  # one note per lost range, at its first offset
        (c.topic, c.partition, first, f"missing: offsets {first} to {end - 1} (group {group} committed {end})")
        for c in out
        if c.lost_tail
        for first, end, group in [c.lost_tail]
    ]
    with NOTE_LOCK, contextlib.suppress(OSError):
        path = directory / CORRUPT_FILE
        if found or path.exists():
            write_json_atomically(
                path,
                [
                    {"topic": t, "partition": p, "offset": o, "reason": r, "found_at": now_text()}
                    for t, p, o, r in found
                ],
            )
    return out


def repair(directory: Path, topic: str, partition: int, offset: int, count: int = 1) -> list[int]:
    """Skip the corrupt (or lost) records ``offset`` … ``offset + count - 1`` of one partition; record them in
    ``skipped.json`` and return them. Refuses a record that checks out: only corruption is ever skipped."""
    checks = {(c.topic, c.partition): c for c in verify(directory)}
    check = checks.get((topic, partition))
    if check is None:
        raise ConfigError(
            f"the event log {directory} has no partition {partition} of topic {topic!r}",
            hint="`pinpipe log verify --log URL` lists the corrupt records",
        )
    bad = {o: r for o, r in check.corrupt}
    if check.lost_tail:
        bad.update({o: "missing (the data ends before it)" for o in range(check.lost_tail[0], check.lost_tail[1])})
    wanted = list(range(offset, offset + count))
    healthy = [o for o in wanted if o not in bad]
    if count < 1 or healthy:
        raise ConfigError(
            f"record {healthy[0] if healthy else offset} of {topic}/{partition} is not corrupt: nothing to skip",
            hint="skip only what `pinpipe log verify --log URL` reports",
            topic=topic,
            partition=partition,
            offset=healthy[0] if healthy else offset,
        )
    path = directory / SKIPPED_FILE
    with NOTE_LOCK:
        entries = read_entries(path)
        entries += [
            {"topic": topic, "partition": partition, "offset": o, "reason": bad[o], "skipped_at": now_text()}
            for o in wanted
        ]
        write_json_atomically(path, entries)
        corrupt_path = directory / CORRUPT_FILE
        left = [
            e
            for e in read_entries(corrupt_path)
            if (e["topic"], e["partition"], e["offset"]) not in {(topic, partition, o) for o in wanted}
        ]
        if corrupt_path.exists():
            write_json_atomically(corrupt_path, left)
    return wanted
