"""What a closed segment of the embedded log holds — its records with and without a usable key, their first and
newest timestamps, the offsets that did not check out — counted once, soon after the segment closed, and kept in
a small sidecar ``<base:020d>.summary`` next to it, so that a retention pass that deletes the segment writes its
``retired.json`` entry (:mod:`pinpipe.log.retired`) without reading the segment again.

Who calls what: the retention thread of the writer process (:class:`~pinpipe.log.retention_runner.RetentionRunner`)
calls :func:`summarise_closed` when it starts and after every roll: each closed segment without a summary that
checks out is read once (:func:`scan`) and its summary written (:func:`write_summary`); orphaned sidecars (their
segment deleted) are removed. A retention pass (:func:`pinpipe.log.retention.retire`) calls
:func:`summary_for` for each segment it deletes.

A sidecar is a convenience, never the record: :func:`summary_for` uses it only when it parses, its checksum
matches, it is for this segment's base and end, the segment's data and index still weigh what they weighed when
it was counted, and the offsets an operator skipped in it are still those it was counted with. Otherwise — no
sidecar (a crash between the roll and the count, a log written before summaries existed), a torn or edited one, a
segment recovery changed, a record skipped since — the segment is read now, exactly as before. So a crash at any
point loses nothing and the counts in ``retired.json`` are those a full read gives.

Counts are taken when the segment is read (once, after the roll): ``records`` are the records that checked out
then, ``unreadable`` the indexed records that did not (they are also noted in ``corrupt.json``), skipped records
are in neither.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from pinpipe.log import segment
from pinpipe.log.integrity import note_corruption, write_json_atomically
from pinpipe.log.retired import RetiredSegment
from pinpipe.telemetry.logs import get_logger
from pinpipe.values import KEY_RANGE, parse_int

log = get_logger("log.retention")

VERSION = 1
_HEAD = struct.Struct("<IIqqi")  # body length, crc32(body), offset, timestamp_ms, key length
_COUNTS = ("base", "end", "bytes", "records", "first_ts_ms", "last_ts_ms", "keyed", "unkeyed")
"""The integer fields of a sidecar, in :class:`SegmentSummary`'s order."""
_FAST_KEY_DIGITS = 18
"""A key of at most this many ASCII digits is a usable ``ind`` without parsing (below 2**63)."""


@dataclass(frozen=True)
class SegmentSummary:
    """What the segment ``[base, end)`` held when it was read, and the bytes (data and index) it weighed then."""

    base: int
    end: int
    bytes: int
    records: int
    first_ts_ms: int
    last_ts_ms: int
    keyed: int
    unkeyed: int
    unreadable: tuple[int, ...] = ()
    """Offsets of indexed records that did not check out (and were not skipped)."""
    skipped: tuple[int, ...] = ()
    """Offsets in ``[base, end)`` an operator had skipped when it was read."""

    def retired(self, retired_at_ms: int) -> RetiredSegment:
        """The segment's entry in ``retired.json``."""
        return RetiredSegment(
            self.base,
            self.end,
            self.records,
            self.bytes,
            self.first_ts_ms,
            self.last_ts_ms,
            self.keyed,
            self.unkeyed,
            len(self.skipped),
            len(self.unreadable),
            retired_at_ms,
        )

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "version": VERSION,
            "base": self.base,
            "end": self.end,
            "bytes": self.bytes,
            "records": self.records,
            "first_ts_ms": self.first_ts_ms,
            "last_ts_ms": self.last_ts_ms,
            "keyed": self.keyed,
            "unkeyed": self.unkeyed,
            "unreadable": list(self.unreadable),
            "skipped": list(self.skipped),
        }
        return {**doc, "crc": _crc(doc)}


def _crc(doc: dict[str, object]) -> int:
    return zlib.crc32(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))


def usable_key(key: bytes | None) -> bool:
    """Whether ``key`` is a usable ``ind`` as validation and cleaning read it (:func:`pinpipe.values.parse_int`
    in the key range; the common case, a short digit string, without parsing)."""
    if key is None:
        return False
    if key.isdigit() and len(key) <= _FAST_KEY_DIGITS:
        return True
    return parse_int(key.decode("utf-8", "replace"), KEY_RANGE) is not None


def in_range(skipped: frozenset[int], base: int, end: int) -> tuple[int, ...]:
    return tuple(sorted(o for o in skipped if base <= o < end))


def scan(directory: Path, topic: str, partition: int, base: int, end: int, skipped: frozenset[int]) -> SegmentSummary:
    """Read the closed segment ``[base, end)`` of the partition in ``directory`` whole and count it: every
    indexed record is checked as readers check it (length, CRC, offset, key length); one that does not check out
    and was not skipped is *unreadable* (noted in ``corrupt.json`` and logged, never raised)."""
    data_path, index_path = segment.segment_paths(directory, base)
    with open(data_path, "rb") as data, open(index_path, "rb") as index:
        data_fd, index_fd = data.fileno(), index.fileno()
        data_size = os.fstat(data_fd).st_size
        index_size = os.fstat(index_fd).st_size
        count = max(0, min(index_size // segment.ENTRY.size, end - base))
        raw = os.pread(index_fd, count * segment.ENTRY.size, 0)
        count = len(raw) // segment.ENTRY.size
        positions = struct.unpack(f"<{count}Q", raw[: count * segment.ENTRY.size])
        records = keyed = 0
        first_ts = last_ts = 0
        bad: list[int] = []
        head_size, body_fixed, head_unpack = _HEAD.size, segment.BODY.size, _HEAD.unpack_from
        i = 0
        while i < count:
            start = positions[i]
            j = max(i + 1, bisect.bisect_right(positions, start + segment.READ_CHUNK, i + 1, count))
            stop = positions[j] if j < count else data_size
            buf = os.pread(data_fd, max(0, stop - start), start) if stop > start else b""
            view = memoryview(buf)
            size = len(buf)
            for k in range(i, j):
                offset = base + k
                if offset in skipped:
                    continue
                pos = positions[k] - start
                if pos < 0 or pos + head_size > size:
                    bad.append(offset)
                    continue
                length, crc, found, ts, klen = head_unpack(buf, pos)
                body_end = pos + segment.HEADER.size + length
                if (
                    length < body_fixed
                    or body_end > size
                    or found != offset
                    or klen < -1
                    or body_fixed + max(klen, 0) > length
                    or zlib.crc32(view[pos + segment.HEADER.size : body_end]) != crc
                ):
                    bad.append(offset)
                    continue
                if not records:
                    first_ts = ts
                last_ts = ts
                records += 1
                if klen >= 0:
                    key_at = pos + head_size
                    if usable_key(buf[key_at : key_at + klen]):
                        keyed += 1
            view.release()
            i = j
    if bad:
        note_corruption(directory.parent.parent, [(topic, partition, o, "unreadable in a closed segment") for o in bad])
        log.error(
            "corrupt records in a closed segment of the event log",
            extra={
                "fields": {
                    "topic": topic,
                    "partition": partition,
                    "offsets": ",".join(str(o) for o in bad[:20]),
                    "hint": segment.REPAIR_HINT,
                }
            },
        )
    return SegmentSummary(
        base,
        end,
        data_size + index_size,
        records,
        first_ts,
        last_ts,
        keyed,
        records - keyed,
        tuple(bad),
        in_range(skipped, base, end),
    )


def read_summary(directory: Path, base: int) -> SegmentSummary | None:
    """The sidecar of the segment of ``base`` if there is one that parses, whose checksum matches and that is for
    this base (None otherwise: the caller counts the segment again)."""
    try:
        doc = orjson.loads(segment.summary_path(directory, base).read_bytes())
        crc = doc.pop("crc")
        if doc.get("version") != VERSION or crc != _crc(doc):
            return None
        n = [int(doc[k]) for k in _COUNTS]
        lists = [tuple(int(o) for o in doc[k]) for k in ("unreadable", "skipped")]
        summary = SegmentSummary(n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], lists[0], lists[1])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return summary if summary.base == base else None


def write_summary(directory: Path, summary: SegmentSummary) -> None:
    """Write the sidecar of ``summary``'s segment atomically and durably (a crash leaves none or this one)."""
    write_json_atomically(segment.summary_path(directory, summary.base), summary.as_dict())


def weight(directory: Path, base: int) -> int:
    """Bytes of the segment's data and index now (FileNotFoundError when it is gone)."""
    data, index = segment.segment_paths(directory, base)
    return data.stat().st_size + index.stat().st_size


def _checks_out(summary: SegmentSummary | None, end: int, size: int, skipped: tuple[int, ...]) -> bool:
    return summary is not None and summary.end == end and summary.bytes == size and summary.skipped == skipped


def summary_for(
    directory: Path, topic: str, partition: int, base: int, end: int, size: int, skipped: frozenset[int]
) -> tuple[SegmentSummary, bool]:
    """The summary of the closed segment ``[base, end)`` weighing ``size`` bytes, and whether the segment had to
    be read for it: its sidecar when that checks out (see the module docstring), else a read of the segment now."""
    found = read_summary(directory, base)
    if found is not None and _checks_out(found, end, size, in_range(skipped, base, end)):
        return found, False
    if segment.summary_path(directory, base).exists():
        log.warning(
            "segment summary does not match its segment: counting the segment again",
            extra={"fields": {"topic": topic, "partition": partition, "base": base}},
        )
    return scan(directory, topic, partition, base, end, skipped), True


def summarise_closed(
    directory: Path,
    topic: str,
    partition: int,
    log_start: int,
    skipped: frozenset[int],
    known: set[int],
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Give every closed segment of the partition in ``directory`` (from ``log_start``) a summary that checks out,
    oldest first, and remove sidecars whose segment is gone; how many segments were read. ``known``: bases whose
    sidecar this process already checked or wrote (kept up to date here: the caller keeps it between calls);
    ``stopping``: checked before each segment (the log is closing: the rest waits for the next writer)."""
    try:
        names = set(os.listdir(directory))
    except FileNotFoundError:
        return 0
    bases = [b for b in segment.list_segments(directory) if b >= log_start]
    closed = dict(itertools.pairwise(bases))
    sidecars = {int(n[: -len(segment.SUMMARY_SUFFIX)]) for n in names if _is_sidecar(n)}
    for base in sidecars - set(closed):  # its segment was deleted: a pass unlinked it while it was being counted
        with contextlib.suppress(FileNotFoundError):
            segment.summary_path(directory, base).unlink()
    for name in (n for n in names if n.endswith(".tmp") and segment.SUMMARY_SUFFIX in n):  # a crashed write
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    known.intersection_update(closed)
    read = 0
    for base, end in closed.items():
        if base in known and base in sidecars:
            continue
        if stopping():
            break
        try:
            size = weight(directory, base)
            found = read_summary(directory, base) if base in sidecars else None
            if not _checks_out(found, end, size, in_range(skipped, base, end)):
                if found is not None or base in sidecars:
                    log.warning(
                        "segment summary does not match its segment: counting the segment again",
                        extra={"fields": {"topic": topic, "partition": partition, "base": base}},
                    )
                write_summary(directory, scan(directory, topic, partition, base, end, skipped))
                read += 1
        except FileNotFoundError:
            continue  # deleted by a pass meanwhile
        known.add(base)
    return read


def _is_sidecar(name: str) -> bool:
    stem = name[: -len(segment.SUMMARY_SUFFIX)]
    return name.endswith(segment.SUMMARY_SUFFIX) and len(stem) == 20 and stem.isdigit()
