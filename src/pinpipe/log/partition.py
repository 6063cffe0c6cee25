"""One partition's writer: appends, fsync, publish, rollback — and recovery when it opens.

Called by :mod:`pinpipe.log.embedded` (the process holding the log's writer lock opens one
:class:`PartitionWriter` per partition; its writer thread calls :meth:`PartitionWriter.write`,
:meth:`~PartitionWriter.sync` and :meth:`~PartitionWriter.publish`) and by ``pinpipe log verify``
(:func:`check_partition`). The file format and the readers are in :mod:`pinpipe.log.segment`.

Recovery on open checks **every** indexed record against the data (corrupt ones are reported, keep their
offsets and are never truncated away), re-indexes durable records that lost their index entry (the index is not
fsynced), truncates a torn tail (an incomplete record after the last indexed one: never indexed, never served),
pads the index for lost offsets an operator skipped, and refuses (CorruptStateError) to open a partition whose
records end before a position a consumer group committed — new records would reuse offsets readers have seen.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pinpipe.errors import CorruptStateError
from pinpipe.log.integrity import fsync_dir, note_corruption
from pinpipe.log.segment import (
    BODY,
    ENTRY,
    HEADER,
    READ_CHUNK,
    REPAIR_HINT,
    _decode,
    _problem,
    indexed_count,
)
from pinpipe.telemetry.logs import get_logger

log = get_logger("log.embedded")


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


def open_writer(
    log_dir: Path, topic: str, partition: int, skipped: Collection[int], committed: dict[int, tuple[int, str]]
) -> PartitionWriter:
    """Open (so recover) partition ``partition`` of ``topic`` in the log at ``log_dir``; log what recovery did and
    note corrupt records in ``corrupt.json``. ``committed``: the highest committed position per partition."""
    writer = PartitionWriter(log_dir / topic / str(partition), topic, partition, skipped, committed.get(partition))
    rec = writer.recovery
    where = {"topic": topic, "partition": partition}
    if rec.corrupt:
        note_corruption(log_dir, [(topic, partition, o, r) for o, r in rec.corrupt])
        offsets = ",".join(str(o) for o, _ in rec.corrupt[:20])
        log.error(
            "corrupt records in the event log", extra={"fields": {**where, "offsets": offsets, "hint": REPAIR_HINT}}
        )
    if rec.reindexed or rec.truncated_bytes or rec.padded:
        counts = {"records": rec.records, "reindexed": rec.reindexed, "truncated_bytes": rec.truncated_bytes}
        log.warning("recovered partition", extra={"fields": {**where, **counts, "padded": rec.padded}})
    return writer
