"""On-disk format of one partition of the embedded log: a data file of CRC'd records plus a dense offset index.

Called by :mod:`pinpipe.log.view` (readers in any process: :func:`read_records` for records, :func:`read_values`
for values only, newline-joined: the sink's path, and :func:`indexed_count`), by the writer of a partition and its
recovery (:mod:`pinpipe.log.partition`, :mod:`pinpipe.log.recovery`) and by retention (:mod:`pinpipe.log.retention`).

A partition is a sequence of **segments**, each a data file and its index, named by the offset of its first
record (its *base*), Kafka style, in ``<dir>/<topic>/<p>/``:

``<base:020d>.data``
    records back to back; each is ``u32 body_len | u32 crc32(body) | body`` with
    ``body = u64 offset | u64 timestamp_ms | i32 key_len (-1: no key) | key | value`` (offsets are absolute).
``<base:020d>.index``
    one ``u64`` byte position per record: entry ``n`` is where record ``base + n`` starts in the data file.
``data`` and ``index``
    the layout of logs written before segments existed: read as the segment of base 0 (never renamed; it rolls
    like any other segment and retention deletes it like any other).
``<base:020d>.summary``
    what a closed segment holds, counted once after it closed (:mod:`pinpipe.log.segment_summary`): retention
    records it in ``retired.json`` when it deletes the segment, without reading the segment again. Not a segment
    file: it may be missing or stale (it is checked against the segment and recomputed then).
``retired.json``
    what retention deleted (:mod:`pinpipe.log.retired`); segments below its ``log_start`` are ignored by readers
    (retention crashed between recording and unlinking them) and deleted by the writer when it opens.

Only the last segment (the *active* one) is appended to; the writer rolls to a new one at ``log.segment_bytes``
(data and index together) or ``log.segment_ms`` (:mod:`pinpipe.log.partition`). A closed segment's files never
change again (its index was fsynced when it closed). Readers list the segments with :func:`list_segments`.

Order of writes is what makes readers in other processes safe without locks: the writer appends records to
the active data file, fsyncs it, and only then appends their entries to its index. A reader trusts the index for
how many records exist, so it never sees a record that is not durable, and it re-checks each record's CRC, offset
and length. An indexed record that does not check out is therefore **corrupt** (the disk or a person changed it),
never "not yet written": reading it raises :class:`~pinpipe.errors.CorruptStateError` naming topic, partition
and offset — unless an operator skipped it (``pinpipe log repair``; the caller passes the skipped offsets),
then readers step over it and its offset stays taken.

The active index is not fsynced: the writer's recovery (:mod:`pinpipe.log.partition`) rebuilds lost entries.
Offsets never go back: corrupt or missing indexed records keep their offsets.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from pinpipe.errors import CorruptStateError
from pinpipe.log import values_read
from pinpipe.log.base import LogRecord

HEADER = struct.Struct("<II")  # body length, crc32(body)
BODY = struct.Struct("<qqi")  # offset, timestamp_ms, key length (-1 for None)
RECORD_HEAD = struct.Struct("<IIqqi")  # HEADER then BODY's fixed part, unpacked in one call
ENTRY = struct.Struct("<Q")
READ_CHUNK = 1 << 20
"""Bytes :func:`read_records` reads at once at most (whole records; one record larger than this is read whole)."""
VALUES_CHUNK = 4 << 20
"""The same bound for :func:`read_values`, whose per-call overhead is a larger share of its (smaller) cost."""
Skipped = Callable[[int], bool]
"""Whether an operator skipped the record at this offset (``pinpipe log repair``)."""
LEGACY = ("data", "index")
"""File names of the single segment of a partition written before segments existed (base 0)."""
SUMMARY_SUFFIX = ".summary"
_SEGMENT_RE = re.compile(r"^(\d{20})\.(data|index)$")
REPAIR_HINT = "run `pinpipe log verify --log URL` to list every corrupt record, then `pinpipe log repair` to skip it"


def segment_paths(directory: Path, base: int) -> tuple[Path, Path]:
    """The data and index files of the segment of ``base`` in partition directory ``directory`` (the old
    layout's ``data``/``index`` when it is there and ``base`` is 0)."""
    if base == 0 and (directory / LEGACY[0]).exists():
        return directory / LEGACY[0], directory / LEGACY[1]
    return directory / f"{base:020d}.data", directory / f"{base:020d}.index"


def list_segments(directory: Path) -> list[int]:
    """Bases of the segments in ``directory`` (a data file or an index is enough), ascending."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    bases = {int(m.group(1)) for name in names if (m := _SEGMENT_RE.match(name))}
    if LEGACY[0] in names or LEGACY[1] in names:
        bases.add(0)
    return sorted(bases)


def summary_path(directory: Path, base: int) -> Path:
    """The summary sidecar of the segment of ``base`` (:mod:`pinpipe.log.segment_summary`)."""
    return directory / f"{base:020d}{SUMMARY_SUFFIX}"


def delete_segment(directory: Path, base: int) -> None:
    """Unlink the segment of ``base`` (index first, so a crash in between leaves a data file that
    :func:`segment_paths` still finds; its summary last); the caller fsyncs the directory."""
    data, index = segment_paths(directory, base)
    legacy = (directory / LEGACY[1], directory / LEGACY[0]) if base == 0 else ()
    for path in (index, data, *legacy, summary_path(directory, base)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def record_span(directory: Path, offset: int) -> tuple[Path, int, int]:
    """``(data file, start, end)`` of indexed record ``offset`` of the partition in ``directory`` (the
    corruption drill flips a byte in the middle of one)."""
    bases = [b for b in list_segments(directory) if b <= offset]
    if not bases:
        raise ValueError(f"offset {offset} is below the first segment of {directory}")
    data, index = segment_paths(directory, bases[-1])
    raw = index.read_bytes()
    at = offset - bases[-1]
    start = ENTRY.unpack_from(raw, ENTRY.size * at)[0]
    end = ENTRY.unpack_from(raw, ENTRY.size * (at + 1))[0] if len(raw) >= ENTRY.size * (at + 2) else None
    return data, start, end if end is not None else data.stat().st_size


def encode(offset: int, timestamp_ms: int, key: bytes | None, value: bytes) -> bytes:
    """One record in the data-file format."""
    body = BODY.pack(offset, timestamp_ms, -1 if key is None else len(key)) + (key or b"") + value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def corrupt_error(topic: str, partition: int, offset: int, reason: str) -> CorruptStateError:
    return CorruptStateError(
        f"record {offset} of topic {topic!r} partition {partition} is corrupt ({reason})",
        hint=REPAIR_HINT,
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
    )


def _decode(buf: bytes | memoryview, pos: int, topic: str, partition: int) -> tuple[LogRecord, int] | None:
    """The record at ``pos`` of ``buf`` and the position after it, or None if it is incomplete or corrupt."""
    if pos + HEADER.size > len(buf):
        return None
    length, crc = HEADER.unpack_from(buf, pos)
    start = pos + HEADER.size
    end = start + length
    if length < BODY.size or end > len(buf):
        return None
    body = bytes(buf[start:end])
    if zlib.crc32(body) != crc:
        return None
    offset, ts, klen = BODY.unpack_from(body, 0)
    kstart = BODY.size
    if klen < -1 or kstart + max(klen, 0) > length:
        return None
    key = None if klen < 0 else body[kstart : kstart + klen]
    value = body[kstart + max(klen, 0) :]
    return LogRecord(topic, partition, offset, value, key, ts), end


def _problem(buf: bytes, pos: int, offset: int, following: int | None) -> str | None:
    """Why the record expected at ``pos`` with ``offset`` (the next one starting at ``following``, when known)
    does not check out; None when it does."""
    if pos < 0 or pos + HEADER.size > len(buf):
        return "the data ends before it"
    length, crc = HEADER.unpack_from(buf, pos)
    end = pos + HEADER.size + length
    if following is not None and end != following and following <= len(buf):
        return f"its length ({length}) does not match the index: a damaged header or a cut record"
    if length < BODY.size:
        return f"impossible length {length}"
    if end > len(buf):
        return "the data ends inside it"
    body = buf[pos + HEADER.size : end]
    if zlib.crc32(body) != crc:
        return "checksum mismatch"
    found, _, klen = BODY.unpack_from(body, 0)
    if found != offset:
        return f"it holds offset {found}"
    if klen < -1 or BODY.size + max(klen, 0) > length:
        return f"impossible key length {klen}"
    return None


def indexed_count(index_fd: int) -> int:
    """How many records are published (durable and indexed) in the partition whose index is open at ``index_fd``."""
    return os.fstat(index_fd).st_size // ENTRY.size


def _span(data_fd: int, index_fd: int, offset: int, max_records: int, limit: int) -> tuple[int, tuple[int, ...], bytes]:
    """How many published records from ``offset`` to read (whole records, about ``limit`` bytes at most), the
    index entries from ``offset`` on (one more when there is one) and the records' bytes from the first entry (plus,
    when they end the published records, whatever follows them, not yet published: callers stop at ``want``)."""
    count = indexed_count(index_fd)
    if offset >= count or max_records <= 0:
        return 0, (), b""
    want = min(max_records, count - offset)
    raw = os.pread(index_fd, ENTRY.size * (want + 1), ENTRY.size * offset)
    n_entries = len(raw) // ENTRY.size
    positions = struct.unpack(f"<{n_entries}Q", raw[: n_entries * ENTRY.size])
    start = positions[0]
    end = positions[want] if n_entries > want else None
    size = (end - start) if end is not None else os.fstat(data_fd).st_size - start
    if size > limit and want > 1:  # stay bounded: read whole records up to about ``limit`` bytes
        cut = bisect.bisect_right(positions, start + limit, 1, want)
        want = max(1, cut - 1)
        size = positions[want] - start
    return want, positions, os.pread(data_fd, max(0, size), start) if size > 0 else b""


def read_records(
    data_fd: int,
    index_fd: int,
    topic: str,
    partition: int,
    offset: int,
    max_records: int,
    skipped: Skipped,
    base: int = 0,
) -> tuple[list[LogRecord], int]:
    """Published records of the segment of ``base`` from ``offset`` on, at most ``max_records`` (fewer at a chunk
    boundary or the segment's end), and the position after the last one looked at (skipped records leave gaps in
    the offsets). Raises CorruptStateError for an indexed record that does not check out and was not skipped."""
    want, positions, buf = _span(data_fd, index_fd, offset - base, max_records, READ_CHUNK)
    out: list[LogRecord] = []
    if not want:
        return out, offset
    origin, entries = positions[0], len(positions)
    for i in range(want):
        pos = positions[i] - origin
        decoded = _decode(buf, pos, topic, partition)
        if decoded is None or decoded[0].offset != offset + i:
            if skipped(offset + i):
                continue
            following = positions[i + 1] - origin if i + 1 < entries else None
            raise corrupt_error(topic, partition, offset + i, _problem(buf, pos, offset + i, following) or "unreadable")
        out.append(decoded[0])
    return out, offset + want


def read_values(
    data_fd: int,
    index_fd: int,
    topic: str,
    partition: int,
    offset: int,
    max_records: int,
    skipped: Skipped,
    base: int = 0,
) -> tuple[int, int, int, bytes]:
    """``(first offset, position after, count, values)`` of consecutive published records of the segment of
    ``base`` from ``offset`` on; each value is followed by ``\\n``.

    The same checks as :func:`read_records` — each record's CRC, length and offset — but no record object is
    built: each value is sliced out of the chunk once and the slices are joined once. Stops at a chunk boundary
    and before a skipped record (a block never spans a gap); skipped records at the start are stepped over.
    """
    return values_read.read_values(data_fd, index_fd, topic, partition, offset, max_records, skipped, base)
