"""Recovery of one segment of a partition when its writer opens, and the check behind ``pinpipe log verify``.

Called by :class:`~pinpipe.log.partition.PartitionWriter` (the writer process, when it takes the log's lock):
:func:`recover_segment` on the active segment (and on a closed one whose index does not reach the next segment's
base); and by :func:`pinpipe.log.scan.verify` through :func:`check_partition`, which checks every indexed record of
every segment.

Recovery checks **every** indexed record of the segment against the data (corrupt ones are reported, keep their
offsets and are never truncated away), re-indexes durable records that lost their index entry (the active index
is not fsynced), truncates a torn tail (an incomplete record after the last indexed one: never indexed, never
served) and pads the index for lost offsets an operator skipped. Closed segments are not re-read when their index
reaches the next segment's base (their files were fsynced when they closed; readers and ``pinpipe log verify``
check their records): opening a log costs a read of the active segment, not of the whole log.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pinpipe.log.retired import read_retired
from pinpipe.log.segment import (
    ENTRY,
    HEADER,
    READ_CHUNK,
    _decode,
    _problem,
    indexed_count,
    list_segments,
    segment_paths,
)


@dataclass
class RecoveryReport:
    """What the writer found on open: records kept (the partition's end offset), re-indexed, bytes of torn tail
    dropped, the corrupt indexed records (not skipped) and how many lost offsets an operator skipped were padded."""

    records: int
    reindexed: int
    truncated_bytes: int
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    padded: int = 0
    segments: int = 1
    finished_deletes: int = 0
    """Segments below the retired manifest's log start that a crash left on disk, deleted now."""


def trusted(positions: Sequence[int]) -> int:
    """How many index entries to trust: a torn index (after a power loss) ends where its positions stop rising."""
    if positions and positions[0] != 0:
        return 0
    for i in range(1, len(positions)):
        if positions[i] < positions[i - 1]:
            return i
    return len(positions)


def check_indexed(
    data_fd: int, positions: Sequence[int], count: int, data_size: int, base: int
) -> tuple[list[tuple[int, str]], int]:
    """Every indexed record of the segment of ``base`` checked: ``(offset, reason)`` of those that do not check
    out, and where the last one ends (the position the next record goes to)."""
    corrupt: list[tuple[int, str]] = []
    i = 0
    while i < count:
        start = positions[i]
        j = max(i + 1, bisect.bisect_right(positions, start + READ_CHUNK, i + 1, count))
        stop_at = positions[j] if j < count else data_size
        buf = os.pread(data_fd, max(0, stop_at - start), start) if stop_at > start else b""
        for k in range(i, j):
            following = positions[k + 1] - start if k + 1 < count else None
            problem = _problem(buf, positions[k] - start, base + k, following)
            if problem:
                corrupt.append((base + k, problem))
        i = j
    if not count:
        return corrupt, 0
    last = positions[count - 1]
    head = os.pread(data_fd, HEADER.size, last) if last < data_size else b""
    declared = last + HEADER.size + HEADER.unpack(head)[0] if len(head) == HEADER.size else None
    if corrupt and corrupt[-1][0] == base + count - 1:  # the last one is corrupt: keep its bytes, append after
        return corrupt, declared if declared is not None and declared <= data_size else max(last, data_size)
    return corrupt, declared if declared is not None else last


def read_positions(index_fd: int) -> tuple[int, ...]:
    count = indexed_count(index_fd)
    return struct.unpack(f"<{count}Q", os.pread(index_fd, count * ENTRY.size, 0))


def check_partition(directory: Path, topic: str, partition: int) -> tuple[int, int, list[tuple[int, str]]]:
    """``(log start, end offset, corrupt)`` of a partition: ``(offset, reason)`` of every indexed record, in every
    segment the partition serves, that does not check out."""
    start = read_retired(directory).log_start
    bases = [b for b in list_segments(directory) if b >= start]
    corrupt: list[tuple[int, str]] = []
    end = start
    for base in bases:
        data_path, index_path = segment_paths(directory, base)
        try:
            data_fd = os.open(data_path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                index_fd = os.open(index_path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                positions = read_positions(index_fd)
            finally:
                os.close(index_fd)
            kept = trusted(positions)
            found, _ = check_indexed(data_fd, positions, kept, os.fstat(data_fd).st_size, base)
            corrupt += found
            end = base + kept
        finally:
            os.close(data_fd)
    return (bases[0] if bases else start), end, corrupt


@dataclass
class SegmentState:
    """Where recovery left one segment: its end offset, where the next record goes in its data file, and what
    it found."""

    end: int
    data_size: int
    reindexed: int
    truncated: int
    corrupt: list[tuple[int, str]]
    padded: int


def recover_segment(
    data_fd: int, index_fd: int, base: int, skipped: Collection[int], topic: str, partition: int
) -> SegmentState:
    """Recover the segment of ``base`` in place (see the module docstring); the caller checks the result against
    what must be there (the next segment's base, the groups' committed positions)."""
    data_size = os.fstat(data_fd).st_size
    positions = read_positions(index_fd)
    count = len(positions)
    kept = trusted(positions)
    found, pos = check_indexed(data_fd, positions, kept, data_size, base)
    corrupt = [(o, r) for o, r in found if o not in skipped]
    # Re-index durable records after the last indexed one; stop at the first torn or corrupt record.
    new_positions: list[int] = []
    while pos < data_size:
        need = HEADER.size
        head = os.pread(data_fd, HEADER.size, pos)
        if len(head) == HEADER.size:
            need += HEADER.unpack(head)[0]
        chunk = os.pread(data_fd, min(max(READ_CHUNK, need), data_size - pos), pos)
        at = 0
        while (decoded := _decode(chunk, at, topic, partition)) is not None:
            if decoded[0].offset != base + kept + len(new_positions):
                break
            new_positions.append(pos + at)
            at = decoded[1]
        if not at:
            break
        pos += at
    end = base + kept + len(new_positions)
    pads = 0
    while end + pads in skipped:  # lost offsets an operator skipped: taken, never handed out again
        pads += 1
    truncated = max(0, data_size - pos)
    if truncated:
        os.ftruncate(data_fd, pos)
        os.fsync(data_fd)
    new_positions += [pos] * pads
    os.ftruncate(index_fd, kept * ENTRY.size)
    if new_positions:
        os.pwrite(index_fd, b"".join(ENTRY.pack(p) for p in new_positions), kept * ENTRY.size)
    if truncated or new_positions or kept != count:
        os.fsync(index_fd)
    return SegmentState(end + pads, pos, len(new_positions) - pads, truncated, corrupt, pads)


def first_timestamp(data_fd: int) -> int | None:
    """Append time of the first record of a segment's data file (None when it is empty or unreadable)."""
    head = os.pread(data_fd, HEADER.size, 0)
    if len(head) < HEADER.size:
        return None
    chunk = os.pread(data_fd, HEADER.size + HEADER.unpack(head)[0], 0)
    decoded = _decode(chunk, 0, "", 0)
    return None if decoded is None else decoded[0].timestamp_ms
