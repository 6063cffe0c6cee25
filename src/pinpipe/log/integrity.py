"""The embedded log's integrity records: what was found corrupt, what an operator chose to skip, and the scan.

Who calls what: :class:`~pinpipe.log.embedded.EmbeddedLog` notes every corrupt record it meets (a reader, or the
writer's recovery) in ``DIR/corrupt.json`` and consults ``DIR/skipped.json`` when a record does not check out;
``pinpipe log verify`` and ``pinpipe log repair`` call :mod:`pinpipe.log.scan`; ``pinpipe accounting``
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
from pathlib import Path
from typing import Any

import orjson

from pinpipe.errors import CorruptStateError

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


def read_entries(path: Path) -> list[dict[str, Any]]:
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


def now_text() -> str:
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
                for e in read_entries(self.path):
                    grouped.setdefault((str(e["topic"]), int(e["partition"])), set()).add(int(e["offset"]))
                self._offsets = {k: frozenset(v) for k, v in grouped.items()}
                self._version = version
            return self._offsets.get((topic, partition), frozenset())


def skipped_offsets(directory: Path) -> dict[tuple[str, int], frozenset[int]]:
    """Every skipped offset per (topic, partition) of the log at ``directory``."""
    grouped: dict[tuple[str, int], set[int]] = {}
    for e in read_entries(directory / SKIPPED_FILE):
        grouped.setdefault((str(e["topic"]), int(e["partition"])), set()).add(int(e["offset"]))
    return {k: frozenset(v) for k, v in grouped.items()}


NOTE_LOCK = threading.Lock()


def note_corruption(directory: Path, found: list[tuple[str, int, int, str]]) -> None:
    """Add ``(topic, partition, offset, reason)`` findings to ``corrupt.json`` (best effort: a read-only log
    directory only loses the note, never the error the caller raises)."""
    with NOTE_LOCK, contextlib.suppress(OSError, CorruptStateError):
        path = directory / CORRUPT_FILE
        entries = read_entries(path)
        have = {(e["topic"], e["partition"], e["offset"]) for e in entries}
        new = [
            {"topic": t, "partition": p, "offset": o, "reason": r, "found_at": now_text()}
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
    return [e for e in read_entries(path) if e["offset"] not in skipped.get((e["topic"], e["partition"]), frozenset())]
