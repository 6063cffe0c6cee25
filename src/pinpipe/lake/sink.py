"""The sink: lands every record of the event log in the lake, exactly once, in the Confluent S3 sink layout.

Who calls what: ``pinpipe sink`` (and the batch DAG, through it with ``--until-idle``) builds a
:class:`LakeSink` from an :class:`~pinpipe.log.base.EventLog` and a :class:`~pinpipe.lake.store.Lake` and calls
:meth:`LakeSink.run`; tests and ``bench/sink.py`` do the same. The run's thread reads the log with
:meth:`EventLog.read_values <pinpipe.log.base.EventLog.read_values>` (values only, already newline-joined: an
object's bytes are the join of the blocks read for it) and cuts batches;
a :class:`~pinpipe.lake.landing.Lander` thread writes them and commits (see :mod:`pinpipe.lake.landing`). Objects
are ``topics/<topic>/partition=<p>/<topic>+<p>+<start offset:010d>.json``: the record values as stored, one per
line, each newline-terminated, no envelope (:func:`~pinpipe.lake.landing.encode_batch`).

How it is exactly once
----------------------

Confluent's S3 sink (protocols §3.3) gets exactly-once from *deterministic boundaries*: files are cut at the
same offsets on every replay (``flush.size``; time rotation only by record time), it uploads first and commits
the consumer offset after, and a crash in between replays from the committed offset and re-uploads the same
file under the same key. Wall-clock rotation (``rotate.schedule.interval.ms``) breaks that guarantee, and
``rotate.interval.ms`` is checked only when a record arrives, so a quiet partition is never flushed.

This sink keeps the first two rules and replaces the third: **the lake itself records how far landing got**.

1. The object key is the offset of the batch's first record; its bytes come from the log alone. A batch is
   cut when it holds ``flush_records`` records, or ``flush_seconds`` after its first record was read — checked
   on every poll, so a quiet partition is flushed too.
2. The object is written durably and without overwriting (:meth:`Lake.create`: fsync + link on ``file://``,
   ``If-None-Match: *`` on S3). Only then is the position ``commit``-ted (next offset after the batch).
3. On start, per partition, the resume position is the end of the last landed object in *this* lake (0 when
   it holds none), the end being ``start + its line count`` (with offset gaps, as Kafka transaction markers
   make, the offset after its ``n``-th record from ``start``). When the last object is past the committed
   position (a crash between put and commit), its bytes are rebuilt from the log and compared — equal, or
   :class:`~pinpipe.errors.CorruptStateError` — and that end is committed at once. A committed position ahead
   of the lake (the group landed into another lake, or this one was emptied or restored) is only reported:
   the lake is the truth, so a fresh lake gets every record.

So boundaries may depend on timing (unlike Confluent's, they need not be replayable), yet no object is ever
rewritten with other boundaries: a restart continues after the last object instead of replaying into it (close
to what Confluent's current code does on a 412: skip ahead to the next missing file). A
write retried after an error that hid a success meets the same key: identical bytes are accepted as already
landed, different bytes raise CorruptStateError. One sink per (lake, group) at a time; a second one racing on
the same partition is detected by that check, not prevented.

Stopping: ``stop`` set (SIGTERM/Ctrl-C in the CLI) makes :meth:`LakeSink.run` cut what it holds into (possibly
smaller) objects, wait until they are durable and committed, and return — nothing read is left uncommitted.
With ``until_idle`` it does the same once every partition has been found empty for ``flush_seconds`` (from the
first poll round that found no record; time spent failing does not count). Retryable failures (log or store
down) are retried with back-off for :data:`~pinpipe.lake.landing.RETRY_FOR_S`, then raised. Topics are
rediscovered every few seconds, so a sink started before the API lands the topics the API creates later
(with a ``topics`` filter, only those topics, which must exist when the sink starts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pinpipe import retry
from pinpipe.errors import CorruptStateError, LogUnavailableError, RetryableError, UnknownTopicError
from pinpipe.lake.landing import LANDING as ROUND
from pinpipe.lake.landing import RETRY_FOR_S, WRITERS, Batch, Lander, SinkStats, encode_batch
from pinpipe.lake.store import Lake, is_temporary_key, parse_landed_key
from pinpipe.log.base import EventLog, LogRecord, ValueBlock
from pinpipe.telemetry.logs import get_logger
from pinpipe.telemetry.sink import SinkMetrics

__all__ = ["MAX_BUFFERED_BYTES", "RETRY_FOR_S", "LakeSink", "SinkStats", "encode_batch"]

MAX_BUFFERED_BYTES = 256 * 1024 * 1024
"""Record bytes held in open batches across all partitions at most; past it the biggest batch is cut early (so
many partitions cannot exhaust memory — a known failure of the Confluent sink, protocols §3.4)."""

log = get_logger("sink")


@dataclass
class _Partition:
    topic: str
    partition: int
    position: int
    """Offset of the next record to read (records before it are cut into batches or buffered here)."""
    blocks: list[bytes] = field(default_factory=list)
    """Newline-terminated values read since the last cut; the next object is their join."""
    count: int = 0
    """Records in ``blocks``."""
    size: int = 0
    """Bytes in ``blocks``."""
    start: int = 0
    opened: float = 0.0


class LakeSink:
    """Lands the topics of one event log in one lake. Not thread-safe: one thread calls :meth:`run`."""

    def __init__(
        self,
        log: EventLog,
        lake: Lake,
        *,
        group: str,
        flush_records: int,
        flush_seconds: float,
        topics: Sequence[str] | None = None,
        metrics: SinkMetrics | None = None,
        rescan_seconds: float = 5.0,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        writers: int = WRITERS,
    ) -> None:
        self.log = log
        self.lake = lake
        self.group = group
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.topic_filter = list(topics) if topics else None
        self.metrics = metrics
        self.rescan_seconds = rescan_seconds
        self.max_buffered_bytes = max_buffered_bytes
        self.writers = writers
        self._buffered = 0
        self.stats = SinkStats()
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._lander: Lander | None = None

    # ------------------------------------------------------------------------------------------ recovery

    def discover(self) -> list[str]:
        """Find the topics to land and recover a resume position for each new partition; returns new topics.

        Raises UnknownTopicError when a topic named in the filter is not in the log.
        """
        held = self.log.topics()
        if self.topic_filter is not None:
            missing = [t for t in self.topic_filter if t not in held]
            if missing:
                raise UnknownTopicError(
                    f"the event log {self.log.url} has no topic {', '.join(map(repr, missing))}",
                    hint="topics it holds: " + (", ".join(sorted(held)) or "none yet") + "; fix --topics",
                    topic=missing[0],
                )
            wanted = {t: held[t] for t in self.topic_filter}
        else:
            wanted = held
        new_topics: list[str] = []
        for topic, count in sorted(wanted.items()):
            fresh = [p for p in range(count) if (topic, p) not in self._parts]
            if not fresh:
                continue
            new_topics.append(topic)
            committed = self.log.committed(self.group, topic)
            for p in fresh:
                self._parts[(topic, p)] = self._recover(topic, p, committed.get(p, 0))
        return new_topics

    def _recover(self, topic: str, partition: int, committed: int) -> _Partition:
        prefix = f"topics/{topic}/partition={partition}/"
        last: tuple[int, str] | None = None
        for obj in self.lake.iter(prefix):
            if is_temporary_key(obj.key):
                self.lake.delete(obj.key)  # left by a crash inside Lake.create
                continue
            parsed = parse_landed_key(obj.key)
            if parsed and parsed[:2] == (topic, partition) and (last is None or parsed[2] > last[0]):
                last = (parsed[2], obj.key)
        resume = self._end_of(topic, partition, *last, committed) if last is not None else 0
        facts = {"topic": topic, "partition": partition, "committed": committed, "resume": resume}
        if resume > committed:
            self.log.commit(self.group, topic, {partition: resume})
            log.warning("resumed after an uncommitted object", extra={"fields": facts})
        elif resume < committed:
            log.warning(
                "the group's committed position is ahead of what this lake holds; landing from the lake's end",
                extra={"fields": {**facts, "group": self.group, "lake": self.lake.url}},
            )
        log.info(
            "partition ready",
            extra={"fields": {"topic": topic, "partition": partition, "position": resume}},
        )
        return _Partition(topic, partition, position=resume)

    def _end_of(self, topic: str, partition: int, start: int, key: str, committed: int) -> int:
        """Position after the landed object ``key``: ``start`` + its line count when the committed position is
        already there; otherwise the object is rebuilt from the log (which also finds offset gaps) and compared."""
        data = self.lake.get(key)
        if data is None:
            raise CorruptStateError(f"landed object {key} vanished while the sink started", key=key)
        lines = data.count(b"\n")
        if committed >= start + lines:
            return start + lines
        records: list[LogRecord] = []
        while len(records) < lines:
            offset = records[-1].offset + 1 if records else start
            got = self.log.read(topic, partition, offset, lines - len(records), timeout_s=2.0)
            if not got:
                break
            records.extend(got)
        if not records or records[0].offset != start or encode_batch([r.value for r in records]) != data:
            raise CorruptStateError(
                f"landed object {key} does not match the event log {self.log.url} "
                f"({lines} lines in the lake, {len(records)} records from offset {start} in the log)",
                hint="point --log and --lake at the log this lake was landed from, or land into an empty lake",
                key=key,
            )
        return records[-1].offset + 1

    # ------------------------------------------------------------------------------------------ landing

    def poll(self) -> int:
        """Read one round (every partition once, without waiting) and cut the batches that are due; returns the
        number of records read. Cutting may block while the lander has ``max_pending`` batches queued."""
        now = time.monotonic()
        got = 0
        for part in self._parts.values():
            room = self.flush_records - part.count
            block = self.log.read_values(part.topic, part.partition, part.position, room)
            if not block.count:
                continue
            if part.count and block.start != part.position:
                self._cut(part)  # records skipped by `pinpipe log repair`: an object holds consecutive offsets
            if not part.count:
                part.start = block.start
                part.opened = now
            data = block.data if block.one_line_each else self._one_line_each(part, block)
            part.blocks.append(data)
            part.count += block.count
            part.size += len(data)
            self._buffered += len(data)
            part.position = block.end
            got += block.count
            if part.count >= self.flush_records:
                self._cut(part)
            while self._buffered > self.max_buffered_bytes:  # many partitions: cut the biggest early
                self._cut(max(self._parts.values(), key=lambda p: p.size))
        return got

    def _one_line_each(self, part: _Partition, block: ValueBlock) -> bytes:
        """The bytes of a block holding a value with a line break (pretty-printed JSON from a foreign producer):
        its records read again one by one and encoded one line each by :func:`encode_batch`."""
        values: list[bytes] = []
        offset = block.start
        while offset < block.end:
            records = self.log.read(part.topic, part.partition, offset, block.count - len(values), timeout_s=2.0)
            records = [r for r in records if r.offset < block.end]
            if not records:  # nothing was taken from the block yet: the run loop retries it whole
                raise LogUnavailableError(
                    f"the event log {self.log.url} did not serve records {offset} to {block.end} of "
                    f"{part.topic}/{part.partition} again within 2 s",
                    backend=self.log.url.partition(":")[0],
                )
            values.extend(r.value for r in records)
            offset = records[-1].offset + 1
        return encode_batch(values)

    def flush(self, *, force: bool = False) -> None:
        """Cut every batch older than ``flush_seconds`` (``force``: every non-empty one) and queue it."""
        now = time.monotonic()
        for part in self._parts.values():
            if part.count and (force or now - part.opened >= self.flush_seconds):
                self._cut(part)

    def _cut(self, part: _Partition) -> None:
        data = part.blocks[0] if len(part.blocks) == 1 else b"".join(part.blocks)
        batch = Batch(part.topic, part.partition, part.start, part.position, part.count, data)
        part.blocks = []
        part.count = 0
        self._buffered -= part.size
        part.size = 0
        assert self._lander is not None, "batches are cut only inside run()"
        self._lander.submit(batch)

    # ------------------------------------------------------------------------------------------ the loop

    def run(self, *, until_idle: bool = False, stop: threading.Event | None = None) -> SinkStats:
        """Land until ``stop`` is set (or, with ``until_idle``, until no record came for ``flush_seconds``).

        Either way it ends by writing what it holds and committing it. Returns the run's statistics.
        """
        stop = stop or threading.Event()
        self._lander = lander = Lander(self.log, self.lake, self.group, self.stats, self.metrics, writers=self.writers)
        poll_wait = min(0.05, self.flush_seconds / 5)
        state = {"last_scan": time.monotonic(), "idle_since": 0.0, "ready": False}

        def retryable(exc: Exception) -> bool:
            if not isinstance(exc, RetryableError) or exc is lander.error:  # the lander already retried its step
                return False
            state["idle_since"] = 0.0  # time spent failing does not count as idle
            return True

        def one_round() -> bool:
            """Read, batch and land once; True when the run is over (stopped, or idle long enough)."""
            if not state["ready"]:
                self.discover()
                state["ready"] = True
            now = time.monotonic()
            idle_since = state["idle_since"]
            if stop.is_set() or (until_idle and idle_since and now - idle_since >= self.flush_seconds):
                self.flush(force=True)
                lander.drain()
                return True
            if now - state["last_scan"] >= self.rescan_seconds:
                state["last_scan"] = now
                if new := self.discover():
                    log.info("new topics", extra={"fields": {"topics": ",".join(new)}})
            got = self.poll()
            self.flush()
            if got:
                state["idle_since"] = 0.0
            else:
                state["idle_since"] = idle_since or time.monotonic()  # the first round that found nothing
                stop.wait(poll_wait)
            return False

        # each round is retried on its own: RETRY_FOR_S counts from a round's first failure, not from the start
        policy = ROUND.but(on=retryable)
        try:
            while not retry.call(policy, one_round):
                pass
        finally:
            lander.close()
            self._lander = None
        log.info(
            "sink stopped",
            extra={
                "fields": {
                    "records": self.stats.records,
                    "objects": self.stats.objects,
                    "reason": "stop" if stop.is_set() else "idle",
                }
            },
        )
        return self.stats
