"""Periodic small-file compaction of the silver tables, run by the stream worker on its own thread.

Every micro-batch commits small Parquet files (one per bucket it writes) to each touched table. A merge reads only
the files whose bucket and ``ind`` statistics its keys can touch, but every file costs the Delta log an entry and
each read a request, so :class:`Compactor` rewrites the small files of ``silver/<kind>`` into bigger ones within
their bucket (:func:`compact_table`, a ``dataChange=false`` commit: readers of older versions keep their files,
new readers see the same rows). Bucketed silver is packed by :mod:`pinpipe.lake.cluster_compact`, which joins only small
files adjacent in ``ind`` order, so a packed file never spans keys other files hold and a merge's pruning by
statistics stays exact.

Who calls what: :class:`pinpipe.stream.worker.StreamWorker` asks :meth:`Compactor.due` after each batch and calls
:meth:`Compactor.start` when it is (:meth:`Compactor.run` on the compactor's thread; the worker's ``close`` waits
for it); ``pinpipe stream --compact-every N|Ns`` builds the schedule with :meth:`CompactSchedule.parse`. The
micro-batches go on meanwhile: bucket by bucket, the compaction holds the table (the kept handle's lock) only to
list the bucket's files and to commit, and commits the groups of files none of which a merge — the worker's own
or another writer's — rewrote since it listed them; a bucket with dropped groups is planned once more. When every
group was dropped the compaction is a Retryable error: retried a few times and otherwise skipped until the next
interval, since the rows are already safe in the table. Run between batches (as it was), it paused the worker
0.35–0.63 s every ~6.5 s at 10M rows per kind.

Measured (deltalake 1.6.6, 2 cores): 30 merges of 300 pin rows left 480 files; one compaction (0.19 s) made
them 16, one per bucket. The unbucketed layout measured before (a MERGE scanning every file: 0.10 s at 250 files
and 50k rows, 0.56 s at 1,000 files and 200k rows) is in ``docs/scaling.md`` with the bucketed figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pinpipe.lake.delta as delta
from pinpipe import retry
from pinpipe.errors import CommitConflictError, ConfigError, RetryableError
from pinpipe.lake.cluster_compact import commit_packing, pack_files
from pinpipe.lake.data_files import table_files
from pinpipe.lake.log_head import LogHead, kept_head
from pinpipe.lake.open_tables import DeltaHandles, buckets_of, held
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS, Kind
from pinpipe.telemetry.logs import get_logger

if TYPE_CHECKING:
    from pinpipe.telemetry.stream import StreamMetrics

log = get_logger("compaction")


SMALL_SHARE = 4
"""Compaction packs only files smaller than ``delta.targetFileSize / SMALL_SHARE``, into files of at most that."""


def compact_table(lake: Lake, *parts: str, handles: DeltaHandles | None = None) -> dict[str, Any] | None:
    """Compact the table's small files; the metrics, None if there is no table. Bucketed silver is packed by
    :mod:`~pinpipe.lake.cluster_compact`, one bucket at a time (:func:`_compact_bucket`): runs of small files
    adjacent in ``ind`` order, into files of up to the table's ``delta.targetFileSize``, so every file keeps a
    narrow key range. Any other table is bin-packed by delta-rs (``optimize.compact``, files under a quarter of the
    target size), held throughout. Files at or above a quarter of the target are left alone: the micro-batches'
    files are tiny, while a full-size file (a batch run's, or one a merge rewrote for an updated row) would be
    rewritten whole to absorb a few kilobytes. App transaction versions survive compaction. With ``handles`` the
    kept handle compacts (and is advanced to the compaction's versions; a failure drops it); a bucketed silver
    table's :class:`~pinpipe.lake.log_head.LogHead` lists and commits, as for the worker's merges. A
    :class:`CommitConflictError` when merges rewrote a file of every group it packed (nothing committed)."""
    dt = delta.open_table(lake, *parts, handles=handles)
    if dt is None:
        return None
    with held(handles, parts), delta.delta_errors("compacting", dt.table_uri):
        target = dt.metadata().configuration.get("delta.targetFileSize")
        small = int(target) // SMALL_SHARE if target else None
        if not (len(parts) == 2 and parts[0] == "silver" and parts[1] in KINDS and buckets_of(dt) is not None):
            metrics: dict[str, Any] = dt.optimize.compact(target_size=small)
            return metrics
        kind: Kind = parts[1]
        head = kept_head(lake, (parts[0], kind), dt, handles)
        buckets = sorted({int(f.bucket or 0) for f in (head.files() if head else table_files(dt))})
    totals = {"numFilesAdded": 0, "numFilesRemoved": 0, "rows": 0, "groupsDropped": 0}
    for bucket in buckets:
        for name, value in _compact_bucket(lake, kind, dt, bucket, int(target or 0), handles, head).items():
            totals[name] += value
    if totals["groupsDropped"] and not totals["numFilesRemoved"]:
        raise CommitConflictError(
            f"every file group this compaction packed ({totals['groupsDropped']}) had a file rewritten since",
            hint="retry: the next compaction plans from the new version",
            table=dt.table_uri,
        )
    return totals


BUCKET_ATTEMPTS = 2
"""Times a bucket is planned and packed in one compaction when merges rewrote files of its groups meanwhile."""


def _compact_bucket(
    lake: Lake, kind: Kind, dt: Any, bucket: int, target: int, handles: DeltaHandles | None, head: LogHead | None
) -> dict[str, int]:
    """Pack one bucket's small files: its file list read holding the table, the files read and written without
    it (a stream worker's merges go on meanwhile; a bucket is a sixteenth of the work, so few merges land in
    between), then the commit holding it, of the groups none of whose files a merge rewrote since; the dropped
    groups are planned again once on the new snapshot."""
    parts = ("silver", kind)
    done = {"numFilesAdded": 0, "numFilesRemoved": 0, "rows": 0, "groupsDropped": 0}
    for _ in range(BUCKET_ATTEMPTS):
        with held(handles, parts), delta.delta_errors("compacting", dt.table_uri):
            if head is not None:
                files = head.bucket_files(bucket)
            else:
                files = [f for f in table_files(dt) if int(f.bucket or 0) == bucket]
        with delta.delta_errors("compacting", dt.table_uri):
            packing = pack_files(lake, kind, files, target, SMALL_SHARE)
        if not packing.groups:
            done["groupsDropped"] = 0  # the new snapshot leaves nothing to pack
            break
        with held(handles, parts), delta.delta_errors("compacting", dt.table_uri):
            committed = commit_packing(lake, kind, dt, packing, head).metrics()
        for name in ("numFilesAdded", "numFilesRemoved", "rows"):
            done[name] += committed[name]
        done["groupsDropped"] = committed["groupsDropped"]  # what the last attempt left
        if not committed["groupsDropped"]:
            break
    return done


COMPACTION = retry.COMMIT_RACE.but(on=RetryableError, attempts=3, timeout_s=30.0)
"""A compaction that lost a commit race (or met a store hiccup): tried 3 times, then left for its next turn."""

CompactFn = Callable[[Lake, str, str], object]


@dataclass(frozen=True)
class CompactSchedule:
    """Compact one table every ``batches`` committed micro-batches or every ``seconds``, whichever is set (the
    kinds take turns, so each of the three tables is compacted every third time)."""

    batches: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> CompactSchedule | None:
        """``"200"`` → every 200 batches; ``"30s"`` → every 30 seconds; ``"0"``, ``"off"`` or None → never."""
        if text is None or text.strip().lower() in ("", "0", "off", "never"):
            return None
        raw = text.strip().lower()
        try:
            if raw.endswith("s"):
                seconds = float(raw[:-1])
                if seconds > 0:
                    return cls(seconds=seconds)
            else:
                batches = int(raw)
                if batches > 0:
                    return cls(batches=batches)
        except ValueError:
            pass
        raise ConfigError(
            f"--compact-every {text!r} is not a number of batches or seconds",
            hint="use e.g. 200 (batches), 30s (seconds) or off",
        )


class Compactor:
    """Runs ``compact(lake, "silver", kind)`` on a :class:`CompactSchedule`, one kind per turn."""

    def __init__(
        self,
        lake: Lake,
        schedule: CompactSchedule,
        kinds: tuple[Kind, ...] = KINDS,
        compact: CompactFn | None = None,
        attempts: int = 3,
        handles: DeltaHandles | None = None,
    ) -> None:
        self.lake = lake
        self.schedule = schedule
        self.kinds = kinds
        self.handles = handles or DeltaHandles()
        """The tables the worker keeps open: it merges through the same handles (see :mod:`pinpipe.lake.open_tables`)."""
        self._compact: CompactFn = compact or (lambda lk, *parts: compact_table(lk, *parts, handles=self.handles))
        self.attempts = attempts
        self._last_batches = 0
        self._last_time = time.monotonic()
        self._turn = 0
        self.runs = 0
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def due(self, batches: int) -> bool:
        """True when the schedule says a compaction is owed after ``batches`` committed micro-batches."""
        if self.schedule.batches is not None:
            return batches - self._last_batches >= self.schedule.batches
        if self.schedule.seconds is not None:
            return time.monotonic() - self._last_time >= self.schedule.seconds
        return False

    def start(self, metrics: StreamMetrics | None = None, batches: int | None = None) -> None:
        """:meth:`run` on the compactor's own thread, so the worker's micro-batches go on while it reads and writes
        (the table is held only to list its files and to commit). Nothing if the last one is still running (the
        turn is taken when it is done). An error other than a lost race, which :meth:`run` would raise, is raised
        here or by :meth:`wait`, after the compaction that met it."""
        self._raise_failure()
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run_caught, args=(metrics, batches), name="pinpipe-compact")
        self._thread.start()

    def wait(self) -> None:
        """Wait for the compaction :meth:`start` began (if any); raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_failure()

    def _run_caught(self, metrics: StreamMetrics | None, batches: int | None) -> None:
        try:
            self.run(metrics, batches)
        except BaseException as exc:  # handed to the worker's thread by start() or wait()
            self._failure = exc

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def run(self, metrics: StreamMetrics | None = None, batches: int | None = None) -> None:
        """Compact the next kind's silver table (kinds take turns, so one run costs one table's rewrite); a
        conflict is retried, then left for the next turn."""
        self._last_time = time.monotonic()
        if batches is not None:
            self._last_batches = batches
        kind = self.kinds[self._turn % len(self.kinds)]
        self._turn += 1
        started = time.monotonic()
        try:
            result = retry.call(COMPACTION.but(attempts=self.attempts), self._compact, self.lake, "silver", kind)
        except RetryableError as exc:  # left for this kind's next turn
            log.warning("compaction skipped", extra={"fields": {"kind": kind, "error": str(exc)}})
            return
        self.runs += 1
        if metrics is not None:
            metrics.compactions.labels(kind).inc()
        summary = (
            result
            if not isinstance(result, dict)
            else {k: result.get(k) for k in ("numFilesAdded", "numFilesRemoved", "groupsDropped")}
        )
        log.info(
            "silver compacted",
            extra={"fields": {"kind": kind, "seconds": round(time.monotonic() - started, 3), "result": summary}},
        )
