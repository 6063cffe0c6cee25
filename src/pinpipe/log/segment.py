"""On-disk format of one partition of the embedded log: a data file of CRC'd records plus a dense offset index.

Called by :mod:`pinpipe.log.embedded` only: the writer thread calls :meth:`PartitionWriter.write` and
:meth:`PartitionWriter.publish`; readers in any process call :func:`read_records` (records),
:func:`read_values` (values only, newline-joined: the sink's path) and :func:`indexed_count`;
``pinpipe log verify`` calls :func:`check_partition`.

Files of partition ``p`` of ``topic`` live in ``<dir>/<topic>/<p>/``:

``data``
    records back to back; each is ``u32 body_len | u32 crc32(body) | body`` with
    ``body = u64 offset | u64 timestamp_ms | i32 key_len (-1: no key) | key | value``.
``index``
    one ``u64`` byte position per record: entry ``n`` is where record ``n`` starts in ``data``.

Order of writes is what makes readers in other processes safe without locks: the writer appends records to
``data``, fsyncs it, and only then appends their entries to ``index``. A reader trusts ``index`` for how many
records exist, so it never sees a record that is not durable, and it re-checks each record's CRC, offset and
length. An indexed record that does not check out is therefore **corrupt** (the disk or a person changed it),
never "not yet written": reading it raises :class:`~pinpipe.errors.CorruptStateError` naming topic, partition
and offset — unless an operator skipped it (``pinpipe log repair``; the caller passes the skipped offsets),
then readers step over it and its offset stays taken.

The index is not fsynced: on open (:class:`PartitionWriter`) the writer checks **every** indexed record against the
data, re-indexes durable records that lost their entry, and truncates a torn tail (an incomplete record after
the last indexed one, left by a crash) — a torn tail was never indexed, so it was never served. Offsets never go
back: corrupt or missing indexed records keep their offsets (the next record gets the offset after the index's
last entry), and the writer refuses to open a partition whose data ends before a position a consumer group
committed (both files were cut: new records would reuse offsets readers have already seen).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pinpipe.errors import CorruptStateError
from pinpipe.log.base import LogRecord
from pinpipe.log.integrity import fsync_dir

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
REPAIR_HINT = "run `pinpipe log verify --log URL` to list every corrupt record, then `pinpipe log repair` to skip it"


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
    if following is not None and end != following:
        return "its length disagrees with the index"
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
    data_fd: int, index_fd: int, topic: str, partition: int, offset: int, max_records: int, skipped: Skipped
) -> tuple[list[LogRecord], int]:
    """Published records from ``offset`` on, at most ``max_records`` (fewer at a chunk boundary), and the position
    after the last one looked at (skipped records leave gaps in the offsets). Raises CorruptStateError for an
    indexed record that does not check out and was not skipped."""
    want, positions, buf = _span(data_fd, index_fd, offset, max_records, READ_CHUNK)
    out: list[LogRecord] = []
    if not want:
        return out, offset
    base, entries = positions[0], len(positions)
    for i in range(want):
        pos = positions[i] - base
        following = positions[i + 1] - base if i + 1 < entries else None
        decoded = _decode(buf, pos, topic, partition)
        if decoded is None or decoded[0].offset != offset + i or (following is not None and decoded[1] != following):
            if skipped(offset + i):
                continue
            raise corrupt_error(topic, partition, offset + i, _problem(buf, pos, offset + i, following) or "unreadable")
        out.append(decoded[0])
    return out, offset + want


def read_values(
    data_fd: int, index_fd: int, topic: str, partition: int, offset: int, max_records: int, skipped: Skipped
) -> tuple[int, int, int, bytes]:
    """``(first offset, position after, count, values)`` of consecutive published records from ``offset`` on;
    each value is followed by ``\\n``.

    The same checks as :func:`read_records` — each record's CRC, length and offset — but no record object is
    built: each value is sliced out of the chunk once and the slices are joined once. Stops at a chunk boundary
    and before a skipped record (a block never spans a gap); skipped records at the start are stepped over.
    """
    want, positions, buf = _span(data_fd, index_fd, offset, max_records, VALUES_CHUNK)
    if not want:
        return offset, offset, 0, b""
    head, crc32, size = RECORD_HEAD.unpack_from, zlib.crc32, len(buf)
    fixed, skip, body_fixed = RECORD_HEAD.size, HEADER.size, BODY.size
    base, entries = positions[0], len(positions)
    values: list[bytes] = []
    add = values.append
    pos = 0
    first = expected = offset
    stop = offset + want
    while expected < stop:
        i = expected - offset
        following = positions[i + 1] - base if i + 1 < entries else size
        if pos + fixed <= size:
            length, crc, record_offset, _, klen = head(buf, pos)
            end = pos + skip + length
            if record_offset == expected and body_fixed <= length and end <= size and end <= following:
                body = buf[pos + skip : end]
                if crc32(body) == crc and (i + 1 == entries or end == following):
                    if klen == -1:
                        add(body[body_fixed:])
                        expected += 1
                        pos = end
                        continue
                    if 0 <= klen <= length - body_fixed:
                        add(body[body_fixed + klen :])
                        expected += 1
                        pos = end
                        continue
        if not skipped(expected):
            nxt = positions[i + 1] - base if i + 1 < entries else None
            reason = _problem(buf, positions[i] - base, expected, nxt) or "unreadable"
            raise corrupt_error(topic, partition, expected, reason)
        if values:
            break  # the block ends before the gap; the next read steps over it
        expected += 1
        first = expected
        if i + 1 >= entries:
            break
        pos = positions[i + 1] - base
    n = len(values)
    if n:
        add(b"")
    return first, expected, n, b"\n".join(values)


def _trusted(positions: Sequence[int]) -> int:
    """How many index entries to trust: a torn index (after a power loss) ends where its positions stop rising."""
    if positions and positions[0] != 0:
        return 0
    for i in range(1, len(positions)):
        if positions[i] < positions[i - 1]:
            return i
    return len(positions)


def _check_indexed(
    data_fd: int, positions: Sequence[int], count: int, data_size: int, topic: str, partition: int
) -> tuple[list[tuple[int, str]], int]:
    """Every indexed record checked: ``(offset, reason)`` of those that do not check out, and where the last
    one ends (the position the next record goes to)."""
    corrupt: list[tuple[int, str]] = []
    i = 0
    while i < count:
        start = positions[i]
        j = max(i + 1, bisect.bisect_right(positions, start + READ_CHUNK, i + 1, count))
        stop_at = positions[j] if j < count else data_size
        buf = os.pread(data_fd, max(0, stop_at - start), start) if stop_at > start else b""
        for k in range(i, j):
            following = positions[k + 1] - start if k + 1 < count else None
            problem = _problem(buf, positions[k] - start, k, following)
            if problem:
                corrupt.append((k, problem))
        i = j
    if not count:
        return corrupt, 0
    last = positions[count - 1]
    head = os.pread(data_fd, HEADER.size, last) if last < data_size else b""
    declared = last + HEADER.size + HEADER.unpack(head)[0] if len(head) == HEADER.size else None
    if corrupt and corrupt[-1][0] == count - 1:  # the last one is corrupt: keep its bytes, append after them
        return corrupt, declared if declared is not None and declared <= data_size else max(last, data_size)
    return corrupt, declared if declared is not None else last


def check_partition(directory: Path, topic: str, partition: int) -> tuple[int, list[tuple[int, str]]]:
    """How many records the partition's index holds, and ``(offset, reason)`` of every one that does not check out."""
    try:
        data_fd = os.open(directory / "data", os.O_RDONLY)
    except FileNotFoundError:
        return 0, []
    try:
        index_fd = os.open(directory / "index", os.O_RDONLY)
        try:
            count = indexed_count(index_fd)
            raw = os.pread(index_fd, count * ENTRY.size, 0)
        finally:
            os.close(index_fd)
        positions = struct.unpack(f"<{count}Q", raw)
        kept = _trusted(positions)
        corrupt, _ = _check_indexed(data_fd, positions, kept, os.fstat(data_fd).st_size, topic, partition)
        return kept, corrupt
    finally:
        os.close(data_fd)


@dataclass
class RecoveryReport:
    """What :class:`PartitionWriter` found on open: records kept, re-indexed, bytes of torn tail dropped, the
    corrupt indexed records (not skipped) and how many lost offsets an operator skipped were padded."""

    records: int
    reindexed: int
    truncated_bytes: int
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    padded: int = 0


class PartitionWriter:
    """The single writer of one partition's files (held by the process that owns the log's lock).

    ``skipped`` are the offsets an operator skipped; ``committed`` the highest position a consumer group committed
    and that group (the data must reach it, or the writer refuses to open)."""

    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        skipped: Collection[int] = (),
        committed: tuple[int, str] | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        fresh = not (directory / "data").exists() or not (directory / "index").exists()
        directory.mkdir(parents=True, exist_ok=True)
        self.data_fd = os.open(directory / "data", os.O_RDWR | os.O_CREAT, 0o644)
        self.index_fd = os.open(directory / "index", os.O_RDWR | os.O_CREAT, 0o644)
        if fresh:  # the new files, their folder and the topic's folder must survive a power loss
            for folder in (directory, directory.parent, directory.parent.parent):
                fsync_dir(folder)
        self.next_offset = 0
        self.data_size = 0
        self._published = (0, 0)
        try:
            self.recovery = self._recover(skipped, committed)
        except BaseException:
            self.close()
            raise

    def _recover(self, skipped: Collection[int], committed: tuple[int, str] | None) -> RecoveryReport:
        data_size = os.fstat(self.data_fd).st_size
        count = indexed_count(self.index_fd)
        positions = struct.unpack(f"<{count}Q", os.pread(self.index_fd, count * ENTRY.size, 0))
        kept = _trusted(positions)
        found, pos = _check_indexed(self.data_fd, positions, kept, data_size, self.topic, self.partition)
        corrupt = [(o, r) for o, r in found if o not in skipped]
        # Re-index durable records after the last indexed one; stop at the first torn or corrupt record.
        new_positions: list[int] = []
        while pos < data_size:
            need = HEADER.size
            head = os.pread(self.data_fd, HEADER.size, pos)
            if len(head) == HEADER.size:
                need += HEADER.unpack(head)[0]
            chunk = os.pread(self.data_fd, min(max(READ_CHUNK, need), data_size - pos), pos)
            at = 0
            while (decoded := _decode(chunk, at, self.topic, self.partition)) is not None:
                if decoded[0].offset != kept + len(new_positions):
                    break
                new_positions.append(pos + at)
                at = decoded[1]
            if not at:
                break
            pos += at
        end = kept + len(new_positions)
        pads = 0
        while end + pads in skipped:  # lost offsets an operator skipped: taken, never handed out again
            pads += 1
        if committed is not None and committed[0] > end + pads:
            raise CorruptStateError(
                f"partition {self.partition} of topic {self.topic!r} ends at offset {end + pads} but consumer group "
                f"{committed[1]!r} committed position {committed[0]}: records {end + pads} to {committed[0] - 1} "
                "are lost, and new records would reuse their offsets",
                hint=REPAIR_HINT,
                topic=self.topic,
                partition=self.partition,
                offset=end + pads,
            )
        truncated = max(0, data_size - pos)
        if truncated:
            os.ftruncate(self.data_fd, pos)
            os.fsync(self.data_fd)
        new_positions += [pos] * pads
        os.ftruncate(self.index_fd, kept * ENTRY.size)
        if new_positions:
            os.pwrite(self.index_fd, b"".join(ENTRY.pack(p) for p in new_positions), kept * ENTRY.size)
        if truncated or new_positions or kept != count:
            os.fsync(self.index_fd)
        self.next_offset = end + pads
        self.data_size = pos
        self._published = (self.next_offset, pos)
        return RecoveryReport(self.next_offset, len(new_positions) - pads, truncated, corrupt, pads)

    def write(
        self, keys: Sequence[bytes | None] | None, values: Sequence[bytes], timestamp_ms: int
    ) -> tuple[int, list[int]]:
        """Append records (``keys[i]``, ``values[i]``; no keys: all None) to ``data``, not yet durable; return the
        first offset and each record's position. A write that fails (disk full) is truncated away before the
        error is raised: its bytes must not come back as records when the partition is reopened."""
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
        try:
            while written < len(payload):
                written += os.pwrite(self.data_fd, payload[written:], self.data_size + written)
        except OSError:
            os.ftruncate(self.data_fd, self.data_size)
            raise
        self.data_size = pos
        self.next_offset = offset
        return first, positions

    def mark(self) -> tuple[int, int]:
        """Where the next write goes: give it to :meth:`reset` to undo the writes after it."""
        return self.next_offset, self.data_size

    def reset(self, mark: tuple[int, int]) -> None:
        """Forget the (unpublished) writes since ``mark``: truncate them away."""
        self.next_offset, self.data_size = mark
        os.ftruncate(self.data_fd, self.data_size)

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
