"""Opening Delta tables: the foreign-error boundary, one-off opens, and handles a long-lived writer keeps open.

:func:`delta_errors` maps deltalake's errors into pinpipe's (``errors.FOREIGN_ERRORS["delta"]``): a lost commit
race is :class:`CommitConflictError` (re-read and retry), a table whose schema is not ours
:class:`CorruptStateError`. :func:`open_table` opens a table once (None if there is none), or returns the handle
kept in a :class:`DeltaHandles`. :mod:`pinpipe.lake.delta` re-exports both (its callers use them from there).

Opening a ``DeltaTable`` reads the last checkpoint and replays every commit after it: its cost grows with the
table's file count, not with the batch. A stream worker commits several times a second to the same six tables
(silver and quarantine of each kind), so it keeps one :class:`DeltaHandles` for its whole life and passes it to
:func:`pinpipe.lake.delta.merge_silver`, :func:`~pinpipe.lake.delta.write_quarantine`,
:func:`~pinpipe.lake.delta.txn_versions` and :func:`pinpipe.stream.compaction.compact_table`: each table is opened
once per process, and every later call starts from the version the handle holds — the one its own last commit
produced (delta-rs advances the handle in memory when it merges and compacts). A bucketed silver table's handle
goes further: its :class:`~pinpipe.lake.log_head.LogHead` writes the worker's commits itself and reads other
writers' as JSON, so neither a commit nor a reload rebuilds delta-rs's snapshot (a cost in proportion to the
table's files); the handle's snapshot then stays at the version it was opened at.

Why a stale handle is safe (the log head's own check is :func:`pinpipe.lake.data_files.check_unchanged`, and its
put-if-absent commit cannot land on a version it has not checked): when another writer (a batch run, another worker, a compaction elsewhere) committed
since, delta-rs's commit finds the newer versions, runs its conflict checker against each of them — a MERGE's
read predicate (the batch's buckets and ``ind`` ranges) against the files they added, the files the MERGE read
against the files they removed, the application transactions against theirs — and either commits on top (the
handle then holds the latest version) or fails with a commit conflict. A failed call drops the handle
(:meth:`DeltaHandles.discard`): the retry reopens the table at its latest version and reads it again, so a stale
snapshot is never committed blindly. Callers without a handle cache (the batch job, one-off reads) open the table
per call as before.

Counters :attr:`DeltaHandles.opens` and :attr:`DeltaHandles.reuses` say how often each happened (tests assert a
worker opens each table once).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pinpipe.errors import (
    CommitConflictError,
    CorruptStateError,
    NotFoundError,
    PinpipeError,
    StoreUnavailableError,
    map_exceptions,
)
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_BUCKET, SILVER_BUCKETS, SILVER_BUCKETS_KEY

if TYPE_CHECKING:
    from pinpipe.lake.log_head import LogHead

TablePath = tuple[str, ...]


class DeltaHandles:
    """One open :class:`DeltaTable` per table path (``("silver", "pin")``), for one writer process.

    Who calls what: the stream worker builds one and hands it to every Delta call it makes; the functions of
    :mod:`pinpipe.lake.delta` call :meth:`get` (an open handle or None), :meth:`keep` after opening or creating a
    table, and :meth:`discard` when a call on the handle failed. Calls for different tables may come from
    different threads (one per kind's commits, and the compactor's): :func:`held` serialises every use of one
    table's handle through :meth:`lock`, so a compaction commits only between two of that kind's merges.

    A bucketed silver table's handle also has a :class:`~pinpipe.lake.log_head.LogHead` (:meth:`head`,
    :meth:`keep_head`): the table's latest version as pinpipe's own commits left it, ahead of the handle's
    snapshot, which then only serves what does not change (schema, configuration, older transactions).
    :meth:`discard` drops both; :meth:`close` waits for the heads' checkpoints."""

    def __init__(self) -> None:
        self._tables: dict[TablePath, DeltaTable] = {}
        self._heads: dict[TablePath, LogHead] = {}
        self._dropped: list[LogHead] = []
        self._lock = threading.Lock()
        self._table_locks: dict[TablePath, threading.RLock] = {}
        self.opens: Counter[TablePath] = Counter()
        """Times each table was opened (or created) because no handle was kept."""
        self.reuses: Counter[TablePath] = Counter()
        """Times a kept handle served a call."""
        self.discards: Counter[TablePath] = Counter()
        """Times a handle was dropped after a failed call."""

    def get(self, parts: TablePath) -> DeltaTable | None:
        with self._lock:
            dt = self._tables.get(parts)
            if dt is not None:
                self.reuses[parts] += 1
            return dt

    def keep(self, parts: TablePath, dt: DeltaTable) -> DeltaTable:
        with self._lock:
            self._tables[parts] = dt
            self.opens[parts] += 1
        return dt

    def discard(self, parts: TablePath) -> None:
        with self._lock:
            if (head := self._heads.pop(parts, None)) is not None:
                self._dropped.append(head)  # its checkpoint may still be running: close waits for it
            if self._tables.pop(parts, None) is not None:
                self.discards[parts] += 1

    def head(self, parts: TablePath) -> LogHead | None:
        """The table's :class:`~pinpipe.lake.log_head.LogHead`, None if it has none (yet, or cannot have one)."""
        with self._lock:
            return self._heads.get(parts)

    def keep_head(self, parts: TablePath, head: LogHead) -> LogHead:
        with self._lock:
            self._heads[parts] = head
        return head

    def close(self) -> None:
        """Wait for the checkpoints the heads are writing (the worker's last act on its tables)."""
        with self._lock:
            heads = [*self._heads.values(), *self._dropped]
            self._dropped = []
        for head in heads:
            head.wait()

    def lock(self, parts: TablePath) -> threading.RLock:
        """The lock every use of the handle of ``parts`` holds (re-entrant: a call may open through the handle)."""
        with self._lock:
            return self._table_locks.setdefault(parts, threading.RLock())

    def open(self, parts: TablePath, opener: Callable[[], DeltaTable | None]) -> DeltaTable | None:
        """The kept handle of ``parts``, or ``opener()`` (kept when it found a table)."""
        dt = self.get(parts)
        if dt is None and (dt := opener()) is not None:
            self.keep(parts, dt)
        return dt

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self._dropped += self._heads.values()
            self._heads.clear()


_HINTS: dict[type[PinpipeError], str] = {
    CommitConflictError: "retry: re-read the table version",
    CorruptStateError: "the table's schema or log is not pinpipe's: move it away (or point --lake elsewhere) and re-run",
}


def delta_errors(what: str, uri: str) -> AbstractContextManager[None]:
    """The Delta boundary: deltalake's errors become pinpipe's (rules in ``errors.FOREIGN_ERRORS["delta"]``)."""
    texts: dict[type[PinpipeError], str] = {
        CommitConflictError: f"{what} on {uri} lost a commit race",
        CorruptStateError: f"{what} on {uri}",
        StoreUnavailableError: f"{what} on {uri} failed",
        NotFoundError: f"{what} on {uri}: no such table",
    }
    return map_exceptions("delta", texts, hint=_HINTS, table=uri)


def open_table(lake: Lake, *parts: str, handles: DeltaHandles | None = None) -> DeltaTable | None:
    """The table at ``parts``, None if there is none; with ``handles``, the kept handle (opened the first time)."""
    if handles is not None:
        return handles.open(parts, lambda: open_table(lake, *parts))
    uri = lake.table_uri(*parts)
    with delta_errors("opening", uri):
        try:
            return DeltaTable(uri, storage_options=lake.storage_options or None)
        except TableNotFoundError:
            return None


@contextmanager
def held(handles: DeltaHandles | None, parts: tuple[str, ...]) -> Iterator[None]:
    """One use of the table's kept handle: alone (:meth:`DeltaHandles.lock`), and a failed call drops the handle,
    so the retry reopens the table at its latest version."""
    if handles is None:
        yield
        return
    with handles.lock(parts):
        try:
            yield
        except BaseException:
            handles.discard(parts)
            raise


def buckets_of(dt: DeltaTable) -> int | None:
    """The bucket count of a silver table, None for a table created before silver carried the bucket column
    (such a table keeps working, unbucketed: its merges prune by ``ind`` ranges only)."""
    if SILVER_BUCKET not in {f.name for f in dt.schema().fields}:
        return None
    return int(dt.metadata().configuration.get(SILVER_BUCKETS_KEY) or SILVER_BUCKETS)
