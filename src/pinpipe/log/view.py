"""A reader's view of one partition of the embedded log: its segments, their files open, read across them.

Who calls what: :class:`~pinpipe.log.embedded.EmbeddedLog` keeps one :class:`PartitionView` per partition it
reads (in any process: sink, stream, accounting, status) and calls :meth:`PartitionView.read_records`,
:meth:`~PartitionView.read_values`, :meth:`~PartitionView.end_offset` and :meth:`~PartitionView.log_start`.

The view lists the partition's segments again only when the directory changed (its mtime: a roll creates files,
retention replaces ``retired.json`` and unlinks files; a directory changed in the last 50 ms is listed again
anyway, as two changes may share one mtime tick), so a busy reader costs one ``stat`` per call. Segments
below the retired manifest's ``log_start`` are ignored (retention recorded them and may not have unlinked them
yet). A view keeps at most a few segments open (the active one and the last ones read), opening others as a
reader reaches them. A segment deleted while it is open stays readable through its open files until the next
listing closes them. A read below the log start starts **at** the log start: the records there were retired (their counts are in
the manifest), the reader goes on with the oldest record the log still holds.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from pinpipe.log import segment
from pinpipe.log.base import LogRecord
from pinpipe.log.retired import read_retired

_SETTLE_NS = 50_000_000
_OPEN_MAX = 4
"""Segments a view keeps open at once (the active one and the last few read)."""
_Open = tuple[int, int, int]
"""``(base, data fd, index fd)`` of an open segment."""


class PartitionView:
    """The segments of one partition, as a reader sees them (thread-safe)."""

    def __init__(self, directory: Path, topic: str, partition: int) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self._bases: list[int] = []
        self._open: OrderedDict[int, tuple[int, int]] = OrderedDict()
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
        self._bases = [b for b in segment.list_segments(self.directory) if b >= self._start]
        for base in [b for b in self._open if b not in self._bases]:  # retired: close
            self._close(base)
        # the active segment must open (a roll creates its data file, then its index); and a directory changed
        # in the last moments may change again within the same mtime tick (a few ms on ext4): in both cases,
        # list it again next time rather than miss a change.
        complete = not self._bases or self._fds(self._bases[-1]) is not None
        settled = time.time_ns() - st.st_mtime_ns > _SETTLE_NS
        self._stamp = stamp if complete and settled else None

    def _close(self, base: int) -> None:
        for fd in self._open.pop(base):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _fds(self, base: int) -> tuple[int, int] | None:
        """The segment's open files (opened now if need be; None when it is gone: retired since the listing).
        At most :data:`_OPEN_MAX` segments stay open: a reader holds few descriptors however long the log."""
        fds = self._open.get(base)
        if fds is not None:
            self._open.move_to_end(base)
            return fds
        data_path, index_path = segment.segment_paths(self.directory, base)
        try:
            data_fd = os.open(data_path, os.O_RDONLY)
        except FileNotFoundError:
            self._stamp = None
            return None
        try:
            index_fd = os.open(index_path, os.O_RDONLY)
        except FileNotFoundError:
            os.close(data_fd)
            self._stamp = None
            return None
        self._open[base] = (data_fd, index_fd)
        while len(self._open) > _OPEN_MAX:
            oldest = next(b for b in self._open if b != self._bases[-1])
            self._close(oldest)
        return data_fd, index_fd

    def _from(self, offset: int) -> Iterator[tuple[int, _Open]]:
        """``(where to read from, segment)`` for the segment holding ``offset`` and every later one (segments
        gone since the listing are stepped over: their records were retired)."""
        first = 0
        for i, base in enumerate(self._bases):
            if base <= offset:
                first = i
        for base in self._bases[first:]:
            fds = self._fds(base)
            if fds is not None:
                yield max(offset, base), (base, *fds)

    def read_records(self, offset: int, max_records: int, skipped: segment.Skipped) -> tuple[list[LogRecord], int]:
        """Like :func:`pinpipe.log.segment.read_records`, across segments (see the module docstring)."""
        with self._lock:
            self._refresh()
            after = max(offset, self._bases[0] if self._bases else offset)
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
            at = max(offset, self._bases[0] if self._bases else offset)
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
            fds = self._fds(self._bases[-1]) if self._bases else None
            if fds is None:
                return self._bases[-1] if self._bases else self._start
            return self._bases[-1] + segment.indexed_count(fds[1])

    def log_start(self) -> int:
        """The first offset the partition still serves (records below it were retired)."""
        with self._lock:
            self._refresh()
            return self._bases[0] if self._bases else self._start

    def close(self) -> None:
        with self._lock:
            for base in list(self._open):
                self._close(base)
            self._bases = []
            self._stamp = None
