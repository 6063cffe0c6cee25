"""The embedded log's integrity records: what was found corrupt, what an operator chose to skip, and the scan.

Who calls what: :class:`~pinpipe.log.embedded.EmbeddedLog` notes every corrupt record it meets (a reader, or the
writer's recovery) in ``DIR/corrupt.json`` and consults ``DIR/skipped.json`` when a record does not check out;
``pinpipe log verify`` calls :func:`verify`, ``pinpipe log repair`` calls :func:`repair`; ``pinpipe accounting``
reads :func:`skipped_offsets` so that a skipped record is reported as skipped, not lost.

- ``corrupt.json``: the records found corrupt and not yet repaired, ``[{topic, partition, offset, reason,
  found_at}]``. The API's ``/healthz`` reports the log degraded while it is not empty.
- ``skipped.json``: the records an operator skipped with ``pinpipe log repair``, ``[{topic, partition, offset,
  reason, skipped_at}]``. It is the durable record of what was given up: readers serve every other record and
  step over these (the offset stays taken: offsets never go back), accounting reports them.

Both files are replaced atomically (temporary file, fsync, rename, fsync of the directory). A corrupt record is
never skipped without an entry in ``skipped.json``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pinpipe.errors import ConfigError, CorruptStateError, NotFoundError

CORRUPT_FILE = "corrupt.json"
SKIPPED_FILE = "skipped.json"


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (files created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, doc: Any) -> None:
    """Replace ``path`` with ``doc`` as JSON so that a crash leaves the old or the new file, never a mix."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        doc = orjson.loads(raw)
        return [dict(e) for e in doc if {"topic", "partition", "offset"} <= set(e)]
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise CorruptStateError(
            f"{path} is not a JSON list of {{topic, partition, offset}} entries",
            hint="restore it from a backup; `pinpipe log verify` rebuilds corrupt.json",
        ) from exc


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class SkipList:
    """``skipped.json`` of one log directory, re-read when the file changes (readers consult it only when a
    record does not check out, so the hot path never stats it)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / SKIPPED_FILE
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._offsets: dict[tuple[str, int], frozenset[int]] = {}

    def offsets(self, topic: str, partition: int) -> frozenset[int]:
        with self._lock:
            try:
                st = self.path.stat()
                version = (st.st_ino, st.st_mtime_ns, st.st_size)  # every repair renames a new file into place
            except FileNotFoundError:
                version = (0, 0, 0)
            if version != self._version:
                grouped: dict[tuple[str, int], set[int]] = {}
                for e in _entries(self.path):
                    grouped.setdefault((str(e["topic"]), int(e["partition"])), set()).add(int(e["offset"]))
                self._offsets = {k: frozenset(v) for k, v in grouped.items()}
                self._version = version
            return self._offsets.get((topic, partition), frozenset())


def skipped_offsets(directory: Path) -> dict[tuple[str, int], frozenset[int]]:
    """Every skipped offset per (topic, partition) of the log at ``directory``."""
    grouped: dict[tuple[str, int], set[int]] = {}
    for e in _entries(directory / SKIPPED_FILE):
        grouped.setdefault((str(e["topic"]), int(e["partition"])), set()).add(int(e["offset"]))
    return {k: frozenset(v) for k, v in grouped.items()}


_note_lock = threading.Lock()


def note_corruption(directory: Path, found: list[tuple[str, int, int, str]]) -> None:
    """Add ``(topic, partition, offset, reason)`` findings to ``corrupt.json`` (best effort: a read-only log
    directory only loses the note, never the error the caller raises)."""
    with _note_lock, contextlib.suppress(OSError, CorruptStateError):
        path = directory / CORRUPT_FILE
        entries = _entries(path)
        have = {(e["topic"], e["partition"], e["offset"]) for e in entries}
        new = [
            {"topic": t, "partition": p, "offset": o, "reason": r, "found_at": _now()}
            for t, p, o, r in found
            if (t, p, o) not in have
        ]
        if new:
            write_json_atomically(path, entries + new)


def reader_error(exc: CorruptStateError, directory: Path, url: str) -> CorruptStateError:
    """Note a corrupt record a reader met (for ``/healthz``) and name the log and the commands that fix it."""
    f = exc.facts
    note_corruption(directory, [(f["topic"], f["partition"], f["offset"], f["reason"])])
    return CorruptStateError(
        f"record {f['offset']} of topic {f['topic']!r} partition {f['partition']} in the event log {url} "
        f"is corrupt ({f['reason']})",
        hint=f"run `pinpipe log verify --log {url}`, then `pinpipe log repair --log {url} --topic {f['topic']} "
        f"--partition {f['partition']} --offset {f['offset']}` to skip it (its content is lost)",
        **f,
    )


def open_problems(directory: Path) -> list[dict[str, Any]]:
    """The records noted corrupt and not skipped since (what ``/healthz`` reports)."""
    path = directory / CORRUPT_FILE
    if not path.exists():
        return []
    skipped = skipped_offsets(directory)
    return [e for e in _entries(path) if e["offset"] not in skipped.get((e["topic"], e["partition"]), frozenset())]


# ---------------------------------------------------------------------------------------------- verify / repair


@dataclass
class PartitionCheck:
    """What :func:`verify` found in one partition."""

    topic: str
    partition: int
    records: int
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    """(offset, reason) of every indexed record that does not check out and was not skipped."""
    skipped: int = 0
    lost_tail: tuple[int, int, str] | None = None
    """(first, end, group): offsets a consumer group committed past the end of the partition (lost records)."""


def verify(directory: Path) -> list[PartitionCheck]:
    """Check every indexed record of every partition, and every group's committed position against the end.

    Notes what it found in ``corrupt.json`` (replacing the old notes, so a repaired log reads healthy again)."""
    from pinpipe.log.commits import FileCommitStore
    from pinpipe.log.partition import check_partition

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
            records, corrupt = check_partition(directory / topic / str(p), topic, p)
            check = PartitionCheck(topic, p, records, [(o, r) for o, r in corrupt if o not in skipped])
            check.skipped = sum(1 for o in skipped if o < records)
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
    with _note_lock, contextlib.suppress(OSError):
        path = directory / CORRUPT_FILE
        if found or path.exists():
            write_json_atomically(
                path,
                [{"topic": t, "partition": p, "offset": o, "reason": r, "found_at": _now()} for t, p, o, r in found],
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
    with _note_lock:
        entries = _entries(path)
        entries += [
            {"topic": topic, "partition": partition, "offset": o, "reason": bad[o], "skipped_at": _now()}
            for o in wanted
        ]
        write_json_atomically(path, entries)
        corrupt_path = directory / CORRUPT_FILE
        left = [
            e
            for e in _entries(corrupt_path)
            if (e["topic"], e["partition"], e["offset"]) not in {(topic, partition, o) for o in wanted}
        ]
        if corrupt_path.exists():
            write_json_atomically(corrupt_path, left)
    return wanted
