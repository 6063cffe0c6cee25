"""The retired manifest of one partition: what retention deleted, recorded durably before it was deleted.

``<dir>/<topic>/<p>/retired.json`` is ``{"log_start": N, "segments": [{...}, ...]}``: ``log_start`` is the
first offset the partition still serves (every offset below it is *retired*), and each segment entry says what
the deleted segment held — ``base``/``end`` (its offsets ``[base, end)``), ``records`` (readable records),
``skipped`` (offsets an operator had skipped as corrupt), ``unreadable`` (records that did not check out when
the segment was counted, once after it closed: :mod:`pinpipe.log.segment_summary`), ``bytes`` (data and index),
``first_ts_ms`` / ``last_ts_ms`` (append times of its first and newest record), ``keyed`` / ``unkeyed`` (records
whose key is, or is not, a usable ``ind`` as validation and cleaning read it: what accounting needs to reconcile
the stream stage) and ``retired_at_ms``.

Who calls what: :mod:`pinpipe.log.retention` (the writer process) calls :func:`write_retired` *before* it
unlinks a segment (the file is replaced atomically: temporary file, fsync, rename, fsync of the directory), so
a crash leaves either the old manifest and the segment, or the new manifest and maybe the segment — readers
(:mod:`pinpipe.log.view`) ignore a segment below ``log_start`` and the writer deletes it when it opens.
``pinpipe accounting`` and ``pinpipe status`` read it through :meth:`EmbeddedLog.retired
<pinpipe.log.embedded.EmbeddedLog.retired>` (any log with that method: :class:`RetiresRecords`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson

from pinpipe.errors import CorruptStateError
from pinpipe.log.integrity import write_json_atomically

RETIRED_FILE = "retired.json"


@dataclass(frozen=True)
class RetiredSegment:
    """What one deleted segment held (see the module docstring)."""

    base: int
    end: int
    records: int
    bytes: int
    first_ts_ms: int
    last_ts_ms: int
    keyed: int
    unkeyed: int
    skipped: int = 0
    unreadable: int = 0
    retired_at_ms: int = 0


@dataclass(frozen=True)
class Retired:
    """A partition's retired manifest: its log start offset and the segments deleted below it."""

    log_start: int = 0
    segments: tuple[RetiredSegment, ...] = ()

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.segments)

    def as_dict(self) -> dict[str, object]:
        return {"log_start": self.log_start, "segments": [asdict(s) for s in self.segments]}


NOTHING_RETIRED = Retired()


@runtime_checkable
class RetiresRecords(Protocol):
    """A log that deletes old records and keeps a manifest of them (the embedded log)."""

    def retired(self, topic: str, partition: int) -> Retired:
        """The retired manifest of one partition (:data:`NOTHING_RETIRED` when retention never deleted there)."""
        ...


def read_retired(directory: Path) -> Retired:
    """The manifest in partition directory ``directory`` (nothing retired when it has none)."""
    path = directory / RETIRED_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return NOTHING_RETIRED
    try:
        doc = orjson.loads(raw)
        segments = tuple(RetiredSegment(**{k: int(v) for k, v in e.items()}) for e in doc["segments"])
        return Retired(int(doc["log_start"]), segments)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptStateError(
            f"{path} is not a retired manifest ({{log_start, segments}})",
            hint="restore it from a backup: it is the only record of what retention deleted",
        ) from exc


def write_retired(directory: Path, retired: Retired) -> None:
    """Replace the manifest in ``directory`` durably (a crash leaves the old one or the new one)."""
    write_json_atomically(directory / RETIRED_FILE, retired.as_dict())
