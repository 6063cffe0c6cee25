"""Where a stream worker's records come from: the partitions it owns, their positions, and how ownership moves.

Who calls what: :class:`pinpipe.stream.worker.StreamWorker` calls :meth:`Feed.open` once with two callbacks, then
:meth:`Feed.poll` in a loop, :meth:`Feed.commit` after each Delta commit, :meth:`Feed.lag` for metrics and
:meth:`Feed.close` at the end. The feed calls back into the worker:

- ``resume(partitions)`` when it gains partitions (start, restart, rebalance): the worker answers the position
  that silver's application transactions say is next, and the feed reads from exactly there. Silver's versions
  are the truth: the log's committed position of the group is informational (for lag tools) and never moves the
  start forward — on a fresh or restored lake with an existing group it is ahead of silver, and taking it would
  skip records silver never got (the feed logs a warning naming the partitions when that happens);
- ``release(partitions)`` *before* it gives partitions away (rebalance, close): the worker finishes its
  in-flight micro-batch so nothing it read is left half-done when another worker takes over.

Two implementations:

- :class:`LogFeed` reads any :class:`~pinpipe.log.base.EventLog` (``memory://``, ``file://``, ``kinesis://`` and
  ``kafka://`` without groups) and splits partitions *statically* across ``workers`` processes: the owner of
  partition ``p`` of a topic of kind ``k`` is ``(p + index(k)) % workers``. The split is stable (it does not move
  when new topics appear) and, with one partition per topic and three workers, gives each worker one kind, so
  workers never contend for the same silver table. Both topics of a kind (``<prefix>.<kind>`` and
  ``streaming-<prefix>-<kind>``) go to the same worker. A worker that dies leaves its partitions unread until it
  is restarted: there is no takeover without a group coordinator. ``min_read_interval_s`` paces reads of one
  partition (Kinesis allows 5 ``GetRecords`` per second per shard: :func:`pinpipe.stream.worker.open_feed` uses 0.2 s).
- :class:`pinpipe.log.kafka_feed.KafkaGroupFeed` lets Kafka's group coordinator balance partitions across workers and
  rebalance when one joins or leaves.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping

from pinpipe.log.base import SOLE, EventLog, LogRecord, Share, TopicPartition
from pinpipe.tables import KINDS, kind_of_topic
from pinpipe.telemetry.logs import get_logger

ResumeFn = Callable[[list[TopicPartition]], dict[TopicPartition, int]]
ReleaseFn = Callable[[list[TopicPartition]], None]

log = get_logger("feed")


class Feed(ABC):
    """The source side of a stream worker (see the module docstring for the call order)."""

    @abstractmethod
    def open(self, resume: ResumeFn, release: ReleaseFn) -> None:
        """Start reading; call ``resume`` for every partition gained, ``release`` before one is lost."""

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        """Up to ``max_records`` new records from owned partitions (per partition in offset order), waiting up
        to ``timeout_s`` for the first one. Records before a partition's resume position are never returned."""

    @abstractmethod
    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record the next position per partition in the log (informational: silver's transactions rule)."""

    @abstractmethod
    def lag(self) -> dict[TopicPartition, int]:
        """Records appended but not yet read, per owned partition (best effort)."""

    @abstractmethod
    def owned(self) -> frozenset[TopicPartition]:
        """The partitions this worker reads now."""

    @property
    def ready(self) -> bool:
        """True once the feed has been given its partitions (a Kafka group join takes a few seconds)."""
        return True

    def close(self) -> None:
        """Release partitions (calling ``release``) and connections. Safe to call twice."""


def static_owner(kind_index: int, partition: int, workers: int) -> int:
    """The worker index that owns a partition in the static split (see the module docstring)."""
    return (partition + kind_index) % workers


class LogFeed(Feed):
    """Static partition split over an :class:`EventLog`; new topics are picked up every ``rescan_s`` seconds."""

    def __init__(
        self,
        event_log: EventLog,
        prefix: str,
        group: str,
        worker_index: int = 0,
        workers: int = 1,
        rescan_s: float = 2.0,
        owns_log: bool = False,
        min_read_interval_s: float = 0.0,
    ) -> None:
        if not 0 <= worker_index < workers:
            raise ValueError(f"worker index {worker_index} outside 0..{workers - 1}")
        self.log = event_log
        self.prefix = prefix
        self.group = group
        self.worker_index = worker_index
        self.workers = workers
        self.rescan_s = rescan_s
        self.owns_log = owns_log
        self.min_read_interval_s = min_read_interval_s
        self._last_read: dict[TopicPartition, float] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._order: list[TopicPartition] = []
        self._cursor = 0
        self._next_scan = 0.0
        self._resume: ResumeFn | None = None
        self._release: ReleaseFn | None = None

    def open(self, resume: ResumeFn, release: ReleaseFn) -> None:
        self._resume, self._release = resume, release
        self._rescan(force=True)

    def _mine(self, topics: Mapping[str, int]) -> list[TopicPartition]:
        out: list[TopicPartition] = []
        for topic, count in sorted(topics.items()):
            kind = kind_of_topic(self.prefix, topic)
            if kind is None:
                continue
            k = KINDS.index(kind)
            out.extend((topic, p) for p in range(count) if static_owner(k, p, self.workers) == self.worker_index)
        return out

    def _rescan(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_scan:
            return
        self._next_scan = now + self.rescan_s
        new = [tp for tp in self._mine(self.log.topics()) if tp not in self._positions]
        if not new or self._resume is None:
            return
        from_txn = self._resume(new)
        ahead: dict[TopicPartition, int] = {}
        for topic in sorted({t for t, _ in new}):
            committed = self.log.committed(self.group, topic)
            for tp in (tp for tp in new if tp[0] == topic):
                self._positions[tp] = from_txn.get(tp, 0)
                if committed.get(tp[1], 0) > self._positions[tp]:
                    ahead[tp] = committed[tp[1]]
        if ahead:
            warn_committed_ahead(self.group, ahead, self._positions)
        self._order = sorted(self._positions)
        log.info(
            "partitions assigned",
            extra={"fields": {"partitions": ",".join(f"{t}:{p}@{self._positions[(t, p)]}" for t, p in new)}},
        )

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            self._rescan()
            out = self._sweep(max_records)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            if not self._order or self.min_read_interval_s:
                time.sleep(min(remaining, max(self.min_read_interval_s / max(len(self._order), 1), 0.01)))
                continue
            # Nothing anywhere: block briefly on one partition (the log wakes us when it is appended to).
            tp = self._order[self._cursor % len(self._order)]
            self._cursor += 1
            wait = remaining if len(self._order) == 1 else min(remaining, 0.01)
            got = self.log.read(tp[0], tp[1], self._positions[tp], max_records, wait)
            if got:
                self._advance(tp, got)
                return got + self._sweep(max_records - len(got), skip=tp)

    def _sweep(self, max_records: int, skip: TopicPartition | None = None) -> list[LogRecord]:
        out: list[LogRecord] = []
        n = len(self._order)
        start = self._cursor
        self._cursor += 1  # rotate the starting partition so a busy one cannot starve the others
        now = time.monotonic()
        for i in range(n):
            if len(out) >= max_records:
                break
            tp = self._order[(start + i) % n]
            if tp == skip or now - self._last_read.get(tp, 0.0) < self.min_read_interval_s:
                continue
            self._last_read[tp] = now
            got = self.log.read(tp[0], tp[1], self._positions[tp], max_records - len(out), 0.0)
            if got:
                self._advance(tp, got)
                out.extend(got)
        return out

    def _advance(self, tp: TopicPartition, records: list[LogRecord]) -> None:
        self._positions[tp] = records[-1].offset + 1

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        by_topic: dict[str, dict[int, int]] = {}
        for (topic, partition), pos in positions.items():
            by_topic.setdefault(topic, {})[partition] = pos
        for topic, parts in by_topic.items():
            self.log.commit(self.group, topic, parts)

    def lag(self) -> dict[TopicPartition, int]:
        return {tp: max(0, self.log.end_offset(*tp) - pos) for tp, pos in self._positions.items()}

    def owned(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    def close(self) -> None:
        if self._release is not None and self._positions:
            self._release(list(self._positions))
        self._positions.clear()
        self._order = []
        self._release = None
        if self.owns_log:
            self.owns_log = False
            self.log.close()


def warn_committed_ahead(
    group: str, committed: Mapping[TopicPartition, int], positions: Mapping[TopicPartition, int]
) -> None:
    """One warning line: the group committed positions past what silver holds (a fresh or restored lake); the
    feed reads from silver's positions, so the records in between are written again rather than skipped."""
    log.warning(
        "the group's committed positions are ahead of silver (a fresh or restored lake?); reading from silver's",
        extra={
            "fields": {
                "group": group,
                "partitions": ",".join(f"{t}:{p}@{positions[(t, p)]}<{n}" for (t, p), n in sorted(committed.items())),
            }
        },
    )


def group_positions(records: Iterable[LogRecord]) -> dict[TopicPartition, int]:
    """The next position per partition after ``records`` (the highest offset + 1)."""
    out: dict[TopicPartition, int] = {}
    for rec in records:
        tp = (rec.topic, rec.partition)
        out[tp] = max(out.get(tp, 0), rec.offset + 1)
    return out


class StaticConsumer:
    """:meth:`EventLog.consume` for logs without a group coordinator: a static split, or DynamoDB leases."""

    min_read_interval_s = 0.0
    """Least time between two reads of one partition (Kinesis: 0.2 s, its 5 ``GetRecords`` per second)."""

    def consume(
        self,
        prefix: str,
        group: str,
        share: Share = SOLE,
        *,
        owns_log: bool = False,
    ) -> Feed:
        assert isinstance(self, EventLog)
        pace = self.min_read_interval_s
        if share.leases:
            from pinpipe.log.leases import LeaseFeed, LeaseTable  # optional extra (boto3)

            table = LeaseTable.from_url(share.leases)
            return LeaseFeed(
                self, prefix, group, table, lease_s=share.lease_s, owns_log=owns_log, min_read_interval_s=pace
            )
        return LogFeed(self, prefix, group, share.index, share.workers, owns_log=owns_log, min_read_interval_s=pace)
