"""The sink: lands every record of the event log in the lake, exactly once, in the Confluent S3 sink layout.

Who calls what: ``pinpipe sink`` (and the batch DAG, through it with ``--until-idle``) builds a
:class:`LakeSink` from an :class:`~pinpipe.log.base.EventLog` and a :class:`~pinpipe.lake.store.Lake` and calls
:meth:`LakeSink.run`. Tests and the benchmark call the same. Objects are
``topics/<topic>/partition=<p>/<topic>+<p>+<start offset:010d>.json``: the record values as stored, one per line,
each newline-terminated, no envelope (:func:`encode_batch`).

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
3. On start, per partition, the resume position is ``max(committed position, end of the last landed
   object)``, the end being ``start + its line count`` (with offset gaps, as Kafka transaction markers make,
   the offset after its ``n``-th record from ``start``). When the last object is past the committed position
   (a crash between put and commit), its bytes are rebuilt from the log and compared — equal, or
   :class:`~pinpipe.errors.CorruptStateError` — and that end is committed at once.

So boundaries may depend on timing (unlike Confluent's, they need not be replayable), yet no object is ever
rewritten with other boundaries: a restart continues after the last object instead of replaying into it. A
write retried after an error that hid a success meets the same key: identical bytes are accepted as already
landed, different bytes raise CorruptStateError. One sink per (lake, group) at a time; a second one racing on
the same partition is detected by that check, not prevented.

Stopping: ``stop`` set (SIGTERM/Ctrl-C in the CLI) makes :meth:`LakeSink.run` write what it holds as (possibly
smaller) objects, commit, and return — nothing is left uncommitted. With ``until_idle`` it returns once no
partition has yielded a record for ``flush_seconds`` (after landing and committing everything read).
Retryable failures (log or store down) are retried with back-off for :data:`RETRY_FOR_S`, then raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from pinpipe.errors import CorruptStateError, PinpipeError, RetryableError, UnknownTopicError
from pinpipe.lake.metrics import SinkMetrics
from pinpipe.lake.store import Lake, is_temporary_key, landed_key, parse_landed_key
from pinpipe.log.base import EventLog, LogRecord
from pinpipe.logs import get_logger

RETRY_FOR_S = 120.0
"""How long retryable failures (log or store unavailable) are retried before :meth:`LakeSink.run` raises."""
_RESCAN_S = 5.0
log = get_logger("sink")


@dataclass
class SinkStats:
    """What one :meth:`LakeSink.run` did."""

    records: int = 0
    objects: int = 0
    bytes: int = 0
    rewrites: int = 0
    """Objects found already landed with identical bytes when writing (a retried put)."""
    busy_s: float = 0.0
    """Seconds from the start of the run to its last durable commit (excludes the final idle wait)."""


@dataclass
class _Partition:
    topic: str
    partition: int
    position: int
    """Offset of the next record to read."""
    committed: int
    landed: int
    """Position after the last durable object (committed once ``landed > committed``)."""
    values: list[bytes] = field(default_factory=list)
    start: int = 0
    opened: float = 0.0
    sealed: tuple[str, bytes, int, int] | None = None
    """A cut batch not yet durable: (key, bytes, records, end position); retried as is until written."""


def encode_batch(values: Sequence[bytes]) -> bytes:
    """Object bytes for record values: each value, then ``\\n``. A value holding a line break (pretty-printed
    JSON) is re-serialised compactly first, so one line is always one record."""
    blob = b"\n".join([*values, b""])
    if blob.count(b"\n") == len(values) and b"\r" not in blob:
        return blob
    return b"\n".join([*(_one_line(v) for v in values), b""])


def _one_line(value: bytes) -> bytes:
    if b"\n" not in value and b"\r" not in value:
        return value
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return value.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")


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
    ) -> None:
        self.log = log
        self.lake = lake
        self.group = group
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.topic_filter = list(topics) if topics else None
        self.metrics = metrics
        self.stats = SinkStats()
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._started = time.monotonic()

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
        resume = committed
        if last is not None:
            end = self._end_of(topic, partition, *last, committed)
            if end > committed:
                resume = end
                self.log.commit(self.group, topic, {partition: resume})
                log.warning(
                    "resumed after an uncommitted object",
                    extra={
                        "fields": {"topic": topic, "partition": partition, "committed": committed, "resume": resume}
                    },
                )
        log.info(
            "partition ready",
            extra={"fields": {"topic": topic, "partition": partition, "position": resume}},
        )
        return _Partition(topic, partition, position=resume, committed=resume, landed=resume)

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
            got = self.log.read(topic, partition, offset, lines - len(records))
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
        """Read one round (every partition once, without waiting); returns the number of records read."""
        now = time.monotonic()
        got = 0
        for part in self._parts.values():
            if part.sealed is not None:
                continue
            room = self.flush_records - len(part.values)
            records = self.log.read(part.topic, part.partition, part.position, room)
            if records:
                if not part.values:
                    part.start = records[0].offset
                    part.opened = now
                part.values.extend(r.value for r in records)
                part.position = records[-1].offset + 1
                got += len(records)
        return got

    def flush(self, *, force: bool = False) -> None:
        """Write every batch that is full, old enough, or (``force``) non-empty; then commit what is durable."""
        now = time.monotonic()
        for part in self._parts.values():
            if part.sealed is None and part.values:
                full = len(part.values) >= self.flush_records
                if force or full or now - part.opened >= self.flush_seconds:
                    data = encode_batch(part.values)
                    key = landed_key(part.topic, part.partition, part.start)
                    part.sealed = (key, data, len(part.values), part.position)
                    part.values = []
            if part.sealed is not None:
                self._write(part)
        self._commit()

    def _write(self, part: _Partition) -> None:
        assert part.sealed is not None
        key, data, count, end = part.sealed
        if not self.lake.create(key, data):
            if self.lake.get(key) != data:
                raise CorruptStateError(
                    f"{key} already exists in {self.lake.url} with other content",
                    hint="another sink may be landing the same log into this lake; run one sink per lake",
                    key=key,
                )
            self.stats.rewrites += 1
        part.sealed = None
        part.landed = end
        self.stats.records += count
        self.stats.objects += 1
        self.stats.bytes += len(data)
        if self.metrics:
            self.metrics.landed(part.topic, part.partition, count, len(data))
        log.debug("landed", extra={"fields": {"key": key, "records": count}})

    def _commit(self) -> None:
        by_topic: dict[str, dict[int, int]] = {}
        for part in self._parts.values():
            if part.landed > part.committed:
                by_topic.setdefault(part.topic, {})[part.partition] = part.landed
        for topic, positions in by_topic.items():
            self.log.commit(self.group, topic, positions)
            for p, pos in positions.items():
                self._parts[(topic, p)].committed = pos
            self.stats.busy_s = time.monotonic() - self._started
        if by_topic and self.metrics:
            for part in self._parts.values():
                self.metrics.position(part.topic, part.partition, part.committed, self._end(part))

    def _end(self, part: _Partition) -> int | None:
        try:
            return self.log.end_offset(part.topic, part.partition)
        except PinpipeError:
            return None

    def pending(self) -> bool:
        """True while some record read is not yet committed."""
        return any(p.values or p.sealed or p.landed > p.committed for p in self._parts.values())

    # ------------------------------------------------------------------------------------------ the loop

    def run(self, *, until_idle: bool = False, stop: threading.Event | None = None) -> SinkStats:
        """Land until ``stop`` is set (or, with ``until_idle``, until no record came for ``flush_seconds``).

        Either way it ends by writing what it holds and committing it. Returns the run's statistics.
        """
        stop = stop or threading.Event()
        self._started = time.monotonic()
        poll_wait = min(0.05, self.flush_seconds / 5)
        last_record = last_scan = time.monotonic()
        failing_since: float | None = None
        backoff = 0.1
        ready = False
        while True:
            try:
                if not ready:
                    self.discover()
                    ready = True
                if stop.is_set():
                    self.flush(force=True)
                    break
                now = time.monotonic()
                if self.topic_filter is None and now - last_scan >= _RESCAN_S:
                    last_scan = now
                    if new := self.discover():
                        log.info("new topics", extra={"fields": {"topics": ",".join(new)}})
                got = self.poll()
                self.flush()
                now = time.monotonic()
                if got:
                    last_record = now
                elif until_idle and now - last_record >= self.flush_seconds:
                    self.flush(force=True)
                    if not self.pending():
                        break
                else:
                    stop.wait(poll_wait)
                failing_since, backoff = None, 0.1
            except RetryableError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= RETRY_FOR_S:
                    raise
                log.warning("retrying", extra={"fields": {"error": str(exc), "backoff_s": round(backoff, 2)}})
                if stop.is_set():  # stopping: still retry the final write and commit, but without spinning
                    time.sleep(backoff)
                else:
                    stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
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
