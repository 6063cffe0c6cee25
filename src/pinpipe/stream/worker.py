"""The streaming job: event log → micro-batches → the same cleaning as batch → silver Delta, exactly once.

Who calls what: ``pinpipe stream`` (:mod:`pinpipe.cli.stream_cmd`) builds a :class:`~pinpipe.log.feed.Feed`, a
:class:`~pinpipe.lake.store.Lake` and one long-lived DuckDB :class:`~pinpipe.engine.Engine`, then calls
:meth:`StreamWorker.run` until a stop is requested. Tests drive :meth:`StreamWorker.step` directly.

One micro-batch (:meth:`StreamWorker.step`):

1. collect records from the feed until the pipeline is free (nothing in flight, or the batch in flight committed)
   and the feed has nothing more at hand — or ``max_batch`` records, or ``max_wait_ms`` after the first one;
2. per kind, ``clean_records(engine, kind, records)`` (:mod:`pinpipe.clean`, shared with batch; its SQL is built
   once per engine, at start by ``prepare_cleaning``), on the engine's thread;
3. per kind, ``write_quarantine`` (insert-if-absent by (topic, partition, offset), so a replay is a no-op), then
   ``merge_silver(..., app_txns={"pinpipe-stream:<topic>:<partition>": next_offset})``: the silver rows and the
   progress of every partition in the batch land in one Delta commit. Each kind commits on a pool thread as soon
   as it is cleaned (different tables; delta-rs works without the GIL), after that kind's previous commit: the
   batch commits while the next one is collected and cleaned (at most one batch in flight), a kind's commits keep
   their order, and a failed commit makes every later one of that kind fail too (never a gap in the versions);
4. once a batch's commits are confirmed, commit the log positions (informational, for lag tools; throttled to
   ``commit_interval_s``).

Exactly once: a partition (re)starts at ``txn_version(app id)`` — silver's own record of what it holds, never the
log's committed position (on a fresh or restored lake with an existing group that is ahead of silver, and would
skip records silver never got) — so whatever a crash, a SIGKILL or a rebalance interrupted is read again, and
whatever was committed is skipped. A crash between 3a and 3b replays into an idempotent quarantine write; a
crash after 3b replays nothing. Every Delta call goes through the worker's :class:`DeltaHandles` (each table opened
once per process; a commit starts from the version the last own commit produced): a concurrent commit by another
writer is checked by delta-rs's conflict checker, and a conflict drops the handle, raises a Retryable error and
the same batch is committed again on a fresh one (:mod:`pinpipe.lake.open_tables`). Compaction runs on its own
thread while batches go on: it holds a table (the handle's lock) only to list its files and to commit, between
two of that kind's merges, and leaves out of its commit the groups of files one of which a merge rewrote meanwhile.

Latency (API acknowledgement → row readable in silver; ``bench/stream.py``): a batch closes when the one before
it committed, so a record waits at most about two batch cycles (cleaning, ~15 ms per kind, then the kinds'
MERGEs, which overlap); under load batches grow instead of queueing. Silver is partitioned by ``bucket`` (the
log's ``CRC32(ind) % partitions`` placement, 16 buckets) and the MERGE predicate names the batch's buckets and
``ind`` ranges, so delta-rs reads and rewrites only the files the batch's keys can touch (``bench/scale.py``;
copy-on-write still rewrites each file holding an updated row). :class:`~pinpipe.stream.compaction.Compactor`
bin-packs the small files merges add. A worker that owns log partition ``p`` of ``P`` (``P`` dividing 16) writes
only the buckets ``b % P == p``. The progress line every ``summary_every_s`` carries the profile of the batches
since the last one (:class:`~pinpipe.stream.options.BatchProfile`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pinpipe import retry
from pinpipe.clean import CleanResult, RawRecord, clean_records, prepare_cleaning
from pinpipe.engine import Engine
from pinpipe.errors import FatalError, RetryableError
from pinpipe.lake import delta
from pinpipe.lake.open_tables import DeltaHandles
from pinpipe.lake.store import Lake
from pinpipe.log import open_log
from pinpipe.log.base import LogRecord, Share, TopicPartition
from pinpipe.log.feed import Feed, group_positions
from pinpipe.stream.compaction import Compactor
from pinpipe.stream.options import BatchOutcome, BatchProfile, KindOutcome, StreamOptions, record_batch
from pinpipe.tables import KINDS, Kind, kind_of_topic, stream_app_id
from pinpipe.telemetry.logs import get_logger
from pinpipe.telemetry.stream import StreamMetrics

log = get_logger("stream")


__all__ = ["BatchOutcome", "KindOutcome", "StreamOptions", "StreamWorker", "open_feed"]


def open_feed(
    log_url: str,
    prefix: str,
    group: str,
    worker_index: int = 0,
    workers: int = 1,
    leases: str | None = None,
    lease_s: float = 10.0,
) -> Feed:
    """Open the log at ``log_url`` for reading and return this worker's feed from it (:meth:`EventLog.consume`:
    a consumer group on Kafka, DynamoDB leases when ``leases`` names a table, a static split otherwise). Closing
    the feed closes the log."""
    event_log = open_log(log_url, access="read")  # a worker only reads: a missing log is an error, never created
    return event_log.consume(prefix, group, Share(worker_index, workers, leases, lease_s), owns_log=True)


@dataclass
class _InFlight:
    """A batch whose kinds are being committed on the pool's threads."""

    outcome: BatchOutcome
    started: float
    futures: dict[Kind, Future[KindOutcome]]


class StreamWorker:
    """Reads a feed and commits micro-batches to silver; see the module docstring for one batch's steps."""

    def __init__(
        self,
        feed: Feed,
        lake: Lake,
        engine: Engine,
        options: StreamOptions,
        metrics: StreamMetrics | None = None,
        compactor: Compactor | None = None,
    ) -> None:
        self.feed = feed
        self.lake = lake
        self.engine = engine
        self.options = options
        self.metrics = metrics or StreamMetrics()
        self.compactor = compactor
        self.handles = compactor.handles if compactor is not None else DeltaHandles()
        self._pending: list[LogRecord] = []
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_log_commit = 0.0
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="pinpipe-merge")
        self._inflight: _InFlight | None = None
        self._completed_last: BatchOutcome | None = None
        self._last_commit: dict[Kind, Future[KindOutcome]] = {}
        self._opened = False
        self.batches = 0
        self._totals = KindOutcome()
        self._profile = BatchProfile()
        self._first_at: float | None = None
        self._next_summary = time.monotonic() + options.summary_every_s

    # ------------------------------------------------------------------------------------------ feed callbacks

    def resume_positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offset per partition according to silver's application transactions (0 if never written): the
        feed starts each partition exactly there (see :mod:`pinpipe.log.feed`)."""
        by_kind: dict[Kind, list[TopicPartition]] = {}
        for topic, partition in partitions:
            kind = kind_of_topic(self.options.prefix, topic)
            if kind is not None:
                by_kind.setdefault(kind, []).append((topic, partition))
        out: dict[TopicPartition, int] = {}
        for kind, tps in by_kind.items():
            versions = delta.txn_versions(self.lake, kind, [stream_app_id(*tp) for tp in tps], handles=self.handles)
            for tp in tps:
                out[tp] = versions.get(stream_app_id(*tp)) or 0
        return out

    def release(self, partitions: list[TopicPartition]) -> None:
        """Called by the feed before it gives ``partitions`` away: commit what was read from them."""
        lost = set(partitions)
        if self._inflight is not None or any((r.topic, r.partition) in lost for r in self._pending):
            self._flush()
        if self._uncommitted:
            self._commit_log(force=True)

    # ------------------------------------------------------------------------------------------ the loop

    def open(self) -> None:
        if not self._opened:
            prepare_cleaning(self.engine, KINDS)  # build the cleaning SQL now, not in the first batch
            self.feed.open(self.resume_positions, self.release)
            self._opened = True

    def run(self, stop: threading.Event) -> None:
        """Commit micro-batches until ``stop`` is set (the batch in flight is finished) or the feed goes idle."""
        self.open()
        idle_since = time.monotonic()
        failed = True
        try:
            while not stop.is_set():
                outcome = self.step(stop)
                now = time.monotonic()
                if outcome is not None or self.busy or not self.feed.ready:
                    idle_since = now
                elif self.options.idle_stop_s is not None and now - idle_since >= self.options.idle_stop_s:
                    log.info("no new records; stopping", extra={"fields": {"idle_s": self.options.idle_stop_s}})
                    break
                self._maybe_summary(now)
            failed = False
        finally:
            self.close(finish=not failed)

    def step(self, stop: threading.Event | None = None) -> BatchOutcome | None:
        """Collect one micro-batch, clean it and hand its commits to the kinds' threads, then wait for the batch
        before it (so one batch commits while the next is collected and cleaned); the outcome of the batch that
        completed, None if none did. With nothing new to read it waits for the batch in flight."""
        self.open()
        self._collect(stop)
        submitted = self._submit()
        outcome = self._complete() if not submitted else self._completed_last
        self._completed_last = None
        if outcome is None:
            self._commit_log(force=False)
        if self.compactor is not None and self.compactor.due(self.batches):
            self.compactor.start(self.metrics, self.batches)  # on its own thread: batches go on meanwhile
        return outcome

    def drain(self) -> BatchOutcome | None:
        """Wait for the batch in flight to be committed (raising its error if it failed); its outcome."""
        return self._complete()

    @property
    def busy(self) -> bool:
        """True while a batch is in flight."""
        return self._inflight is not None

    def _collect(self, stop: threading.Event | None) -> None:
        """Gather the next micro-batch. It closes as soon as the pipeline is free — nothing in flight, or the batch
        in flight committed — and the feed has nothing more at hand, so at a low rate a record waits for no
        window, and under load a batch holds what arrived while the one before it committed (its size follows the
        commit time); at most ``max_batch`` records, and at most ``max_wait_ms`` after its first record."""
        opts = self.options
        wait_s = opts.max_wait_ms / 1000
        deadline = time.monotonic() + wait_s
        while len(self._pending) < opts.max_batch:
            if stop is not None and stop.is_set():
                return
            free = self._inflight is None or all(f.done() for f in self._inflight.futures.values())
            if self._pending and free:
                got = self.feed.poll(opts.max_batch - len(self._pending), 0.0)  # only what is at hand
                if not got:
                    return
                self._pending.extend(got)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # with records pending, wait in short steps to notice the batch in flight committing
            got = self.feed.poll(opts.max_batch - len(self._pending), min(remaining, 0.005 if self._pending else 0.1))
            if got and not self._pending:
                self._first_at = time.monotonic()
                deadline = self._first_at + wait_s  # the window starts with the first record
            self._pending.extend(got)

    def _flush(self) -> BatchOutcome | None:
        """Submit the pending records (if any) and wait until everything in flight is committed."""
        self._submit()
        return self._complete()

    def _submit(self) -> bool:
        """Clean the pending records kind by kind on this thread (the engine's) and hand each kind's commit to
        the pool, chained after that kind's previous commit (so a kind's commits keep their order, and a failed
        commit stops every later one); then wait for the previous batch. False if nothing was pending."""
        if not self._pending:
            return False
        records, self._pending = self._pending, []
        started = time.monotonic()
        by_kind: dict[Kind, list[RawRecord]] = {}
        for rec in records:
            kind = kind_of_topic(self.options.prefix, rec.topic)
            if kind is not None:
                by_kind.setdefault(kind, []).append(RawRecord(rec.topic, rec.partition, rec.offset, rec.value, "log"))
        positions = group_positions(records)
        collect_s = started - self._first_at if self._first_at is not None else 0.0
        self._first_at = None
        batch = _InFlight(BatchOutcome(len(records), 0.0, collect_s=collect_s, positions=positions), started, {})
        for kind, recs in by_kind.items():
            t0 = time.monotonic()
            result = clean_records(self.engine, kind, recs)
            clean_s = time.monotonic() - t0
            previous = self._last_commit.get(kind)
            fut = self._pool.submit(self._commit_after, previous, kind, result, self._txns(kind, positions), clean_s)
            batch.futures[kind] = self._last_commit[kind] = fut
        self._completed_last = self._complete()
        self._inflight = batch
        return True

    def _complete(self) -> BatchOutcome | None:
        """Wait for the batch in flight; record it (metrics, log positions to commit). Raises its error."""
        batch, self._inflight = self._inflight, None
        if batch is None:
            return None
        outcome = batch.outcome
        for kind, fut in batch.futures.items():
            outcome.kinds[kind] = fut.result()
        outcome.clean_s = sum(k.clean_s for k in outcome.kinds.values())
        outcome.seconds = time.monotonic() - batch.started
        self.batches += 1
        self._uncommitted.update(outcome.positions)
        self._commit_log(force=False)
        self._record(outcome)
        return outcome

    def _commit_after(
        self, previous: Future[KindOutcome] | None, kind: Kind, result: CleanResult, txns: dict[str, int], t: float
    ) -> KindOutcome:
        if previous is not None:
            previous.result()  # the kind's previous batch first; if it failed, this one must not commit
        return self._commit_kind(kind, result, txns, t)

    def _txns(self, kind: Kind, positions: dict[TopicPartition, int]) -> dict[str, int]:
        return {
            stream_app_id(topic, partition): pos
            for (topic, partition), pos in positions.items()
            if kind_of_topic(self.options.prefix, topic) == kind
        }

    def _commit_kind(self, kind: Kind, result: CleanResult, txns: dict[str, int], clean_s: float) -> KindOutcome:
        stats = result.stats
        out = KindOutcome(
            read=stats.read,
            quarantined=stats.quarantined,
            duplicates=stats.duplicates,
            conflicts=stats.conflicts,
            clean_s=clean_s,
        )
        t0 = time.monotonic()
        if result.quarantine.num_rows:
            self._retrying(lambda: delta.write_quarantine(self.lake, kind, result.quarantine, handles=self.handles))
        out.quarantine_s = time.monotonic() - t0
        t0 = time.monotonic()
        merged = self._retrying(
            lambda: delta.merge_silver(self.lake, kind, result.silver, app_txns=txns, handles=self.handles)
        )
        out.merge_s = time.monotonic() - t0
        out.inserted, out.updated = merged.inserted, merged.updated
        return out

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """``call`` under :data:`pinpipe.retry.STREAM_COMMIT` (``max_retries`` retries), each retry counted."""
        tries = 0
        for attempt in retry.attempts(retry.STREAM_COMMIT.but(attempts=self.options.max_retries + 1)):
            with attempt:
                if tries:
                    self.metrics.retries.inc()
                tries += 1
                return call()
        raise FatalError("unreachable")  # pragma: no cover - the policy raises the last error

    def _commit_log(self, force: bool) -> None:
        if not self._uncommitted:
            return
        now = time.monotonic()
        if not force and now - self._last_log_commit < self.options.commit_interval_s:
            return
        positions, self._uncommitted = self._uncommitted, {}
        self._last_log_commit = now
        try:
            self.feed.commit(positions)
        except RetryableError as exc:  # informational only: silver's transactions already hold the progress
            log.warning("could not commit log positions", extra={"fields": {"error": str(exc)}})
        self.metrics.set_lag(self.feed.lag())

    # ------------------------------------------------------------------------------------------ reporting

    def _record(self, outcome: BatchOutcome) -> None:
        record_batch(self.metrics, self._totals, outcome)
        self._profile.add(outcome)

    def _maybe_summary(self, now: float) -> None:
        if now < self._next_summary:
            return
        self._next_summary = now + self.options.summary_every_s
        t = self._totals
        lag = self.feed.lag()
        self.metrics.set_lag(lag)
        log.info(
            "stream progress",
            extra={
                "fields": {
                    "batches": self.batches,
                    "read": t.read,
                    "inserted": t.inserted,
                    "updated": t.updated,
                    "quarantined": t.quarantined,
                    "duplicates": t.duplicates,
                    "lag": sum(lag.values()),
                    "partitions": len(self.feed.owned()),
                    **self._profile.summary(),
                }
            },
        )
        self._profile = BatchProfile()

    def _wait_compaction(self, raise_error: bool) -> None:
        assert self.compactor is not None
        try:
            self.compactor.wait()
        except Exception as exc:
            if raise_error:
                raise
            log.warning("compaction failed while the worker stopped", extra={"fields": {"error": str(exc)}})

    def close(self, finish: bool = True) -> None:
        """Finish the batch in flight and the pending records (or, when ``finish`` is False, drop what is not
        committed yet: a restart reads it again), commit log positions, release the feed and the merge threads."""
        try:
            if finish:
                self._flush()
                self._commit_log(force=True)
            else:
                self._pending = []
                self._inflight = None  # its commits finish or fail on their own; their positions are not recorded
        finally:
            if self.compactor is not None:
                self._wait_compaction(raise_error=finish and sys.exc_info()[0] is None)
        self.feed.close()
        self._pool.shutdown(wait=True)
        self.handles.close()  # the silver tables' checkpoints being written
        t = self._totals
        log.info(
            "stream stopped",
            extra={"fields": {"batches": self.batches, "read": t.read, "quarantined": t.quarantined}},
        )
