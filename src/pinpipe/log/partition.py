"""One partition's writer: appends, fsync, publish, rollback, segment rolling — and recovery when it opens.

Called by :mod:`pinpipe.log.embedded` (the process holding the log's writer lock opens one
:class:`PartitionWriter` per partition; its writer thread calls :meth:`PartitionWriter.roll_if_due` before it
writes a batch, then :meth:`~PartitionWriter.write`, :meth:`~PartitionWriter.sync` and
:meth:`~PartitionWriter.publish`). The file format and the readers are in :mod:`pinpipe.log.segment`, what
recovery checks in :mod:`pinpipe.log.recovery`, deletion of old segments in :mod:`pinpipe.log.retention`.

Opening a partition: segments below the retired manifest's log start are deleted (retention crashed after
recording them and before unlinking them); each closed segment must end where the next one begins (else it is
recovered, and offsets still missing are an error); the active (last) segment is recovered in full; and the writer
refuses (CorruptStateError) to open a partition whose records end before a position a consumer group committed —
new records would reuse offsets readers have seen. A partition with no segment gets one at the log start (0 for
a new partition).

Rolling: when the active segment holds ``segment_bytes`` or more (data and index) or its first record is
``segment_ms`` old, and everything written to it is published, its index is fsynced and a new segment starts at
the next offset (files created, directory fsynced). A crash during a roll leaves either the old active segment or
a new empty one after a complete closed one: both open.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import zlib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from pinpipe.errors import CorruptStateError
from pinpipe.log.integrity import fsync_dir, note_corruption
from pinpipe.log.recovery import RecoveryReport, first_timestamp, recover_segment
from pinpipe.log.retired import read_retired
from pinpipe.log.segment import (
    BODY,
    ENTRY,
    HEADER,
    REPAIR_HINT,
    delete_segment,
    indexed_count,
    list_segments,
    segment_paths,
)
from pinpipe.telemetry.logs import get_logger

log = get_logger("log.embedded")

__all__ = ["PartitionWriter", "RecoveryReport", "open_writer"]


def _open_pair(directory: Path, base: int, create: bool = True) -> tuple[int, int]:
    """The segment's files, opened for writing (``create``: made if missing — never for a closed segment, which
    retention may have just deleted: FileNotFoundError then)."""
    data_path, index_path = segment_paths(directory, base)
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    data_fd = os.open(data_path, flags, 0o644)
    try:
        return data_fd, os.open(index_path, flags, 0o644)
    except BaseException:
        os.close(data_fd)
        raise


def _lost(topic: str, partition: int, end: int, what: str, offset: int) -> CorruptStateError:
    return CorruptStateError(
        f"partition {partition} of topic {topic!r} {what}: records {end} to {offset - 1} are lost, and new records "
        "would reuse their offsets",
        hint=REPAIR_HINT,
        topic=topic,
        partition=partition,
        offset=end,
    )


class PartitionWriter:
    """The single writer of one partition's segments (held by the process that owns the log's lock).

    ``skipped`` are the offsets an operator skipped; ``committed`` the highest position a consumer group committed
    and that group (the data must reach it, or the writer refuses to open); ``segment_bytes`` / ``segment_ms``
    when the active segment rolls (``segment_ms`` None: never by age)."""

    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        skipped: Collection[int] = (),
        committed: tuple[int, str] | None = None,
        segment_bytes: int = 128 << 20,
        segment_ms: int | None = None,
    ) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.segment_bytes = segment_bytes
        self.segment_ms = segment_ms
        fresh = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if fresh:  # the new folder and the topic's folder must survive a power loss
            for folder in (directory, directory.parent, directory.parent.parent):
                fsync_dir(folder)
        self.data_fd = self.index_fd = -1
        self.base = self.next_offset = self.data_size = 0
        self.first_ts: int | None = None
        self._published = (0, 0)
        try:
            self.recovery = self._recover(set(skipped), committed)
        except BaseException:
            self.close()
            raise

    def _recover(self, skipped: set[int], committed: tuple[int, str] | None) -> RecoveryReport:
        start = read_retired(self.directory).log_start
        bases = list_segments(self.directory)
        finished = 0
        for base in [b for b in bases if b < start]:  # retired, but a crash came before the unlink
            delete_segment(self.directory, base)
            finished += 1
        if finished:
            fsync_dir(self.directory)
        bases = [b for b in bases if b >= start] or [start]
        reindexed = truncated = padded = 0
        corrupt: list[tuple[int, str]] = []
        for base, following in itertools.pairwise(bases):  # closed segments: must reach the next base
            try:
                data_fd, index_fd = _open_pair(self.directory, base, create=False)
            except FileNotFoundError:
                continue  # retired (and unlinked) by a retention pass since the listing
            try:
                if base + indexed_count(index_fd) == following:
                    continue
                state = recover_segment(data_fd, index_fd, base, skipped, self.topic, self.partition)
                reindexed, truncated, padded = reindexed + state.reindexed, truncated + state.truncated, padded
                corrupt += state.corrupt
                if state.end != following:
                    raise _lost(
                        self.topic,
                        self.partition,
                        state.end,
                        f"has a segment ending at {state.end} before the next one, which begins at {following}",
                        following,
                    )
            finally:
                os.close(data_fd)
                os.close(index_fd)
        self.base = bases[-1]
        created = not segment_paths(self.directory, self.base)[0].exists()
        self.data_fd, self.index_fd = _open_pair(self.directory, self.base)
        if created:
            fsync_dir(self.directory)
        state = recover_segment(self.data_fd, self.index_fd, self.base, skipped, self.topic, self.partition)
        if committed is not None and committed[0] > state.end:
            raise _lost(
                self.topic,
                self.partition,
                state.end,
                f"ends at offset {state.end} but consumer group {committed[1]!r} committed position {committed[0]}",
                committed[0],
            )
        self.next_offset, self.data_size = state.end, state.data_size
        self._published = (self.next_offset, self.data_size)
        self.first_ts = first_timestamp(self.data_fd)
        return RecoveryReport(
            self.next_offset,
            reindexed + state.reindexed,
            truncated + state.truncated,
            corrupt + state.corrupt,
            padded + state.padded,
            len(bases),
            finished,
        )

    # ------------------------------------------------------------------------------------------ rolling

    def roll_if_due(self, now_ms: int) -> bool:
        """Start a new segment if the active one is full or old enough and everything in it is published (the
        writer thread calls this before writing a batch); True if it rolled."""
        if self.next_offset == self.base or self._published != (self.next_offset, self.data_size):
            return False
        size = self.data_size + (self.next_offset - self.base) * ENTRY.size
        aged = self.segment_ms is not None and self.first_ts is not None and now_ms - self.first_ts >= self.segment_ms
        if size < self.segment_bytes and not aged:
            return False
        os.fsync(self.index_fd)  # a closed segment's index is complete and durable
        new_data, new_index = _open_pair(self.directory, self.next_offset)
        fsync_dir(self.directory)
        for fd in (self.data_fd, self.index_fd):
            os.close(fd)
        self.data_fd, self.index_fd = new_data, new_index
        self.base, self.data_size, self.first_ts = self.next_offset, 0, None
        self._published = (self.next_offset, 0)
        log.debug(
            "rolled segment", extra={"fields": {"topic": self.topic, "partition": self.partition, "base": self.base}}
        )
        return True

    # ------------------------------------------------------------------------------------------ writing

    def write(
        self, keys: Sequence[bytes | None] | None, values: Sequence[bytes], timestamp_ms: int
    ) -> tuple[int, list[int]]:
        """Append records (``keys[i]``, ``values[i]``; no keys: all None) to the active segment, not yet durable;
        return the first offset and each record's position. A write that fails (disk full) is truncated away
        before the error is raised: its bytes must not come back as records when the partition is reopened."""
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
        if self.first_ts is None and positions:
            self.first_ts = timestamp_ms
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
        at = (first - self.base) * ENTRY.size
        os.pwrite(self.index_fd, struct.pack(f"<{len(positions)}Q", *positions), at)
        self._published = (first + len(positions), self.data_size)

    def rollback(self) -> None:
        """Forget records written since the last publish (their append failed): truncate them away."""
        self.next_offset, self.data_size = self._published
        os.ftruncate(self.data_fd, self.data_size)
        os.ftruncate(self.index_fd, (self.next_offset - self.base) * ENTRY.size)

    def close(self) -> None:
        for fd in (self.data_fd, self.index_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.data_fd = self.index_fd = -1


def open_writer(
    log_dir: Path,
    topic: str,
    partition: int,
    skipped: Collection[int],
    committed: dict[int, tuple[int, str]],
    segment_bytes: int = 128 << 20,
    segment_ms: int | None = None,
) -> PartitionWriter:
    """Open (so recover) partition ``partition`` of ``topic`` in the log at ``log_dir``; log what recovery did and
    note corrupt records in ``corrupt.json``. ``committed``: the highest committed position per partition."""
    writer = PartitionWriter(
        log_dir / topic / str(partition), topic, partition, skipped, committed.get(partition), segment_bytes, segment_ms
    )
    rec = writer.recovery
    where = {"topic": topic, "partition": partition}
    if rec.corrupt:
        note_corruption(log_dir, [(topic, partition, o, r) for o, r in rec.corrupt])
        offsets = ",".join(str(o) for o, _ in rec.corrupt[:20])
        log.error(
            "corrupt records in the event log", extra={"fields": {**where, "offsets": offsets, "hint": REPAIR_HINT}}
        )
    if rec.reindexed or rec.truncated_bytes or rec.padded or rec.finished_deletes:
        counts = {"records": rec.records, "reindexed": rec.reindexed, "truncated_bytes": rec.truncated_bytes}
        extra = {"padded": rec.padded, "segments": rec.segments, "retired_segments_deleted": rec.finished_deletes}
        log.warning("recovered partition", extra={"fields": {**where, **counts, **extra}})
    return writer


Clock = Callable[[], int]
"""Milliseconds since the epoch (record timestamps, segment age, retention age); injectable for tests and bench."""
