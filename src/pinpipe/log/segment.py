"""On-disk format of one partition of the embedded log: a data file of CRC'd records plus a dense offset index.

Called by :mod:`pinpipe.log.embedded` only: the writer thread calls :meth:`PartitionWriter.write` and
:meth:`PartitionWriter.publish`; readers in any process call :func:`read_records` (records),
:func:`read_values` (values only, newline-joined: the sink's path) and :func:`indexed_count`.

Files of partition ``p`` of ``topic`` live in ``<dir>/<topic>/<p>/``:

``data``
    records back to back; each is ``u32 body_len | u32 crc32(body) | body`` with
    ``body = u64 offset | u64 timestamp_ms | i32 key_len (-1: no key) | key | value``.
``index``
    one ``u64`` byte position per record: entry ``n`` is where record ``n`` starts in ``data``.

Order of writes is what makes readers in other processes safe without locks: the writer appends records to
``data``, fsyncs it, and only then appends their entries to ``index``. A reader trusts ``index`` for how many
records exist, so it never sees a record that is not durable, and it re-checks each record's CRC and offset. The
index is not fsynced: on open (:meth:`PartitionWriter.open`) the writer checks the index against the data,
re-indexes durable records that lost their entry, and truncates a torn tail (an incomplete or corrupt record
left by a crash) — a torn tail is never indexed, so it was never served.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pinpipe.log.base import LogRecord

HEADER = struct.Struct("<II")  # body length, crc32(body)
BODY = struct.Struct("<qqi")  # offset, timestamp_ms, key length (-1 for None)
RECORD_HEAD = struct.Struct("<IIqqi")  # HEADER then BODY's fixed part, unpacked in one call
ENTRY = struct.Struct("<Q")
READ_CHUNK = 1 << 20
"""Bytes :func:`read_records` reads at once at most (whole records; one record larger than this is read whole)."""
VALUES_CHUNK = 4 << 20
"""The same bound for :func:`read_values`, whose per-call overhead is a larger share of its (smaller) cost."""


def encode(offset: int, timestamp_ms: int, key: bytes | None, value: bytes) -> bytes:
    """One record in the data-file format."""
    body = BODY.pack(offset, timestamp_ms, -1 if key is None else len(key)) + (key or b"") + value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


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


def indexed_count(index_fd: int) -> int:
    """How many records are published (durable and indexed) in the partition whose index is open at ``index_fd``."""
    return os.fstat(index_fd).st_size // ENTRY.size


def _span(data_fd: int, index_fd: int, offset: int, max_records: int, limit: int) -> tuple[int, int, bytes]:
    """How many published records from ``offset`` to read (whole records, about ``limit`` bytes at most), where
    they start in ``data``, and their bytes (plus, when they end the published records, whatever follows them,
    not yet published: callers stop at ``want`` records). ``(0, 0, b"")`` when there is nothing to read."""
    count = indexed_count(index_fd)
    if offset >= count or max_records <= 0:
        return 0, 0, b""
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
    return want, start, os.pread(data_fd, size, start)


def read_records(
    data_fd: int, index_fd: int, topic: str, partition: int, offset: int, max_records: int
) -> list[LogRecord]:
    """Published records from ``offset`` on, at most ``max_records`` (fewer if a chunk boundary is reached)."""
    want, _, buf = _span(data_fd, index_fd, offset, max_records, READ_CHUNK)
    out: list[LogRecord] = []
    pos = 0
    for i in range(want):
        decoded = _decode(buf, pos, topic, partition)
        if decoded is None or decoded[0].offset != offset + i:
            break  # not yet fully visible to this process; the caller will see it on the next read
        out.append(decoded[0])
        pos = decoded[1]
    return out


def read_values(data_fd: int, index_fd: int, offset: int, max_records: int) -> tuple[int, bytes]:
    """Values of the published records from ``offset`` on, each followed by ``\\n``, and how many there are.

    The same checks as :func:`read_records` — each record's CRC, length and offset — but no record object is
    built: each value is sliced out of the chunk once and the slices are joined once. Stops (returning fewer)
    at a chunk boundary or at the first record that does not check out.
    """
    want, _, buf = _span(data_fd, index_fd, offset, max_records, VALUES_CHUNK)
    if not want:
        return 0, b""
    head, crc32, size = RECORD_HEAD.unpack_from, zlib.crc32, len(buf)
    fixed, skip, body_fixed = RECORD_HEAD.size, HEADER.size, BODY.size
    values: list[bytes] = []
    add = values.append
    pos = 0
    expected = offset
    stop = offset + want
    while expected < stop and pos + fixed <= size:
        length, crc, record_offset, _, klen = head(buf, pos)
        end = pos + skip + length
        if record_offset != expected or length < body_fixed or end > size:
            break
        body = buf[pos + skip : end]
        if crc32(body) != crc:
            break  # not yet fully visible to this process (or corrupt); the caller will see it on the next read
        if klen == -1:
            add(body[body_fixed:])
        elif 0 <= klen <= length - body_fixed:
            add(body[body_fixed + klen :])
        else:
            break
        expected += 1
        pos = end
    n = len(values)
    if n:
        add(b"")
    return n, b"\n".join(values)


@dataclass
class RecoveryReport:
    """What :meth:`PartitionWriter.open` found: records kept, re-indexed, and bytes of torn tail dropped."""

    records: int
    reindexed: int
    truncated_bytes: int


class PartitionWriter:
    """The single writer of one partition's files (held by the process that owns the log's lock)."""

    def __init__(self, directory: Path, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        directory.mkdir(parents=True, exist_ok=True)
        self.data_fd = os.open(directory / "data", os.O_RDWR | os.O_CREAT, 0o644)
        self.index_fd = os.open(directory / "index", os.O_RDWR | os.O_CREAT, 0o644)
        self.next_offset = 0
        self.data_size = 0
        self._published = (0, 0)
        self.recovery = self._recover()

    def _recover(self) -> RecoveryReport:
        data_size = os.fstat(self.data_fd).st_size
        count = indexed_count(self.index_fd)
        raw = os.pread(self.index_fd, count * ENTRY.size, 0)
        positions = [ENTRY.unpack_from(raw, i * ENTRY.size)[0] for i in range(count)]
        # Trust the longest index prefix whose last entry points at a valid record with the right offset.
        kept = count
        while kept > 0 and not self._valid_at(positions[kept - 1], kept - 1, data_size):
            kept -= 1
        pos = 0
        if kept:
            head = os.pread(self.data_fd, HEADER.size, positions[kept - 1])
            pos = positions[kept - 1] + HEADER.size + HEADER.unpack(head)[0]
        # Re-index durable records after the kept prefix; stop at the first torn or corrupt record.
        new_positions: list[int] = []
        while pos < data_size:
            chunk = os.pread(self.data_fd, min(READ_CHUNK, data_size - pos), pos)
            at = 0
            progressed = False
            while True:
                decoded = _decode(chunk, at, self.topic, self.partition)
                if decoded is None or decoded[0].offset != kept + len(new_positions):
                    break
                new_positions.append(pos + at)
                at = decoded[1]
                progressed = True
            if not progressed:
                if HEADER.size <= len(chunk):
                    need = HEADER.size + HEADER.unpack_from(chunk, 0)[0]
                    if len(chunk) < need <= data_size - pos:  # one record larger than a chunk
                        big = os.pread(self.data_fd, need, pos)
                        decoded = _decode(big, 0, self.topic, self.partition)
                        if decoded is not None and decoded[0].offset == kept + len(new_positions):
                            new_positions.append(pos)
                            pos += need
                            continue
                break
            pos += at
        truncated = data_size - pos
        if truncated:
            os.ftruncate(self.data_fd, pos)
            os.fsync(self.data_fd)
        os.ftruncate(self.index_fd, kept * ENTRY.size)
        if new_positions:
            os.pwrite(self.index_fd, b"".join(ENTRY.pack(p) for p in new_positions), kept * ENTRY.size)
        if truncated or new_positions or kept != count:
            os.fsync(self.index_fd)
        self.next_offset = kept + len(new_positions)
        self.data_size = pos
        self._published = (self.next_offset, pos)
        return RecoveryReport(self.next_offset, len(new_positions), truncated)

    def _valid_at(self, position: int, offset: int, data_size: int) -> bool:
        if position + HEADER.size > data_size:
            return False
        length = HEADER.unpack(os.pread(self.data_fd, HEADER.size, position))[0]
        buf = os.pread(self.data_fd, HEADER.size + length, position)
        decoded = _decode(buf, 0, self.topic, self.partition)
        return decoded is not None and decoded[0].offset == offset

    def write(
        self, keys: Sequence[bytes | None] | None, values: Sequence[bytes], timestamp_ms: int
    ) -> tuple[int, list[int]]:
        """Append records (``keys[i]``, ``values[i]``; no keys: all None) to ``data``, not yet durable; return the
        first offset and each record's position."""
        first = self.next_offset
        parts: list[bytes] = []
        positions: list[int] = []
        pos = self.data_size
        body_pack, header_pack, crc32, header_size = BODY.pack, HEADER.pack, zlib.crc32, HEADER.size
        append_part, append_pos = parts.append, positions.append
        offset = first
        for key, value in zip(keys, values, strict=True) if keys is not None else ((None, v) for v in values):
            body = (
                body_pack(offset, timestamp_ms, -1) + value
                if key is None
                else b"".join((body_pack(offset, timestamp_ms, len(key)), key, value))
            )
            append_pos(pos)
            append_part(header_pack(len(body), crc32(body)))
            append_part(body)
            pos += header_size + len(body)
            offset += 1
        payload = b"".join(parts)
        written = 0
        while written < len(payload):
            written += os.pwrite(self.data_fd, payload[written:], self.data_size + written)
        self.data_size = pos
        self.next_offset = offset
        return first, positions

    def sync(self) -> None:
        """Make everything written so far durable."""
        os.fdatasync(self.data_fd)

    def publish(self, positions: list[int], first: int) -> None:
        """Make synced records visible to readers by appending their index entries."""
        os.pwrite(self.index_fd, struct.pack(f"<{len(positions)}Q", *positions), first * ENTRY.size)
        self._published = (first + len(positions), self.data_size)

    def rollback(self) -> None:
        """Forget records written since the last publish (their append failed): truncate them away."""
        self.next_offset, self.data_size = self._published
        os.ftruncate(self.data_fd, self.data_size)
        os.ftruncate(self.index_fd, self.next_offset * ENTRY.size)

    def close(self) -> None:
        for fd in (self.data_fd, self.index_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
