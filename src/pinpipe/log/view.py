"""A reader's view of one partition of the embedded log: its segments, their files open, read across them.

Who calls what: :class:`~pinpipe.log.embedded.EmbeddedLog` keeps one :class:`PartitionView` per partition it
reads (in any process: sink, stream, accounting, status) and calls :meth:`PartitionView.read_records`,
:meth:`~PartitionView.read_values`, :meth:`~PartitionView.end_offset` and :meth:`~PartitionView.log_start`.

The view lists the partition's segments again only when the directory changed (its mtime: a roll creates files,
retention replaces ``retired.json`` and unlinks files; a directory changed in the last 50 ms is listed again
anyway, as two changes may share one mtime tick), so a busy reader costs one ``stat`` per call. Segments
below the retired manifest's ``log_start`` are ignored (retention recorded them and may not have unlinked them
yet). A segment deleted while it is open stays readable through its open files until the next listing closes
them. A read below the log start starts **at** the log start: the records there were retired (their counts are in
the manifest), the reader goes on with the oldest record the log still holds.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pinpipe.log import segment
from pinpipe.log.base import LogRecord
from pinpipe.log.retired import read_retired

_SETTLE_NS = 50_000_000
_Open = tuple[int, int, int]
"""``(base, data fd, index fd)`` of an open segment."""


class PartitionView:
    """The segments of one partition, as a reader sees them (thread-safe)."""

    def __init__(self, directory: Path, topic: str, partition: int) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self._segments: list[_Open] = []
        self._start = 0
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            return  # nothing was ever written
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return
        self._start = read_retired(self.directory).log_start
        wanted = [b for b in segment.list_segments(self.directory) if b >= self._start]
        have = {base: (base, d, i) for base, d, i in self._segments}
        complete = True
        segments: list[_Open] = []
        for base in wanted:
            if base in have:
                segments.append(have.pop(base))
                continue
            data_path, index_path = segment.segment_paths(self.directory, base)
            try:
                data_fd = os.open(data_path, os.O_RDONLY)
            except FileNotFoundError:
                complete = False  # being created (or deleted) right now: list again next time
                continue
            try:
                index_fd = os.open(index_path, os.O_RDONLY)
            except FileNotFoundError:
                os.close(data_fd)
                complete = False
                continue
            segments.append((base, data_fd, index_fd))
        for _, data_fd, index_fd in have.values():  # retired: close
            for fd in (data_fd, index_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._segments = segments
        # A directory changed in the last moments may change again within the same mtime tick (a few ms on
        # ext4): list it again next time rather than miss that change.
        settled = time.time_ns() - st.st_mtime_ns > _SETTLE_NS
        self._stamp = stamp if complete and settled else None

    def _from(self, offset: int) -> Iterator[tuple[int, _Open]]:
        """``(where to read from, segment)`` for the segment holding ``offset`` and every later one."""
        first = 0
        for i, (base, _, _) in enumerate(self._segments):
            if base <= offset:
                first = i
        for i in range(first, len(self._segments)):
            seg = self._segments[i]
            yield max(offset, seg[0]), seg

    def read_records(self, offset: int, max_records: int, skipped: segment.Skipped) -> tuple[list[LogRecord], int]:
        """Like :func:`pinpipe.log.segment.read_records`, across segments (see the module docstring)."""
        with self._lock:
            self._refresh()
            after = max(offset, self._segments[0][0] if self._segments else offset)
            for start, (base, data_fd, index_fd) in self._from(offset):
                records, after = segment.read_records(
                    data_fd, index_fd, self.topic, self.partition, start, max_records, skipped, base=base
                )
                if records or after > start:
                    return records, after
            return [], after

    def read_values(self, offset: int, max_records: int, skipped: segment.Skipped) -> tuple[int, int, int, bytes]:
        """Like :func:`pinpipe.log.segment.read_values`, across segments (a block never spans two)."""
        with self._lock:
            self._refresh()
            at = max(offset, self._segments[0][0] if self._segments else offset)
            for start, (base, data_fd, index_fd) in self._from(offset):
                first, end, count, data = segment.read_values(
                    data_fd, index_fd, self.topic, self.partition, start, max_records, skipped, base=base
                )
                if count or end > start:
                    return first, end, count, data
                at = start
            return at, at, 0, b""

    def end_offset(self) -> int:
        """The offset the next appended record will get (the log start when every segment is empty)."""
        with self._lock:
            self._refresh()
            if not self._segments:
                return self._start
            base, _, index_fd = self._segments[-1]
            return base + segment.indexed_count(index_fd)

    def log_start(self) -> int:
        """The first offset the partition still serves (records below it were retired)."""
        with self._lock:
            self._refresh()
            return self._segments[0][0] if self._segments else self._start

    def close(self) -> None:
        with self._lock:
            for _, data_fd, index_fd in self._segments:
                for fd in (data_fd, index_fd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._segments = []
            self._stamp = None
