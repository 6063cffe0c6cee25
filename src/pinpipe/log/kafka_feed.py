"""Kafka consumer-group feed for stream workers (``kafka://HOST:PORT[,HOST:PORT][?librdkafka.key=value&...]``).

The only module of the stream path that imports ``confluent_kafka`` (extra ``pinpipe[kafka]``). Every worker of
one ``--group`` subscribes to the kind topics (``<prefix>.<kind>`` and ``streaming-<prefix>-<kind>``); the group
coordinator spreads partitions across them and moves them when a worker joins, leaves or stops heartbeating.

Who calls what (see :mod:`pinpipe.log.feed`): on assignment librdkafka calls :meth:`KafkaGroupFeed._on_assign`, which
asks the worker for silver's transaction versions and seeks each partition there (the group's committed offset
is informational: see :mod:`pinpipe.log.feed`); on revocation :meth:`KafkaGroupFeed._on_revoke` lets the worker commit its in-flight batch first. Both
run inside :meth:`poll` on the worker's thread. Group timeouts are ``session.timeout.ms=6000`` and
``heartbeat.interval.ms=1000`` (with librdkafka's 45 s default a join takes ~23 s on Tansu); URL query
parameters whose name has a dot (``?fetch.wait.max.ms=20``) override librdkafka settings, others (``timeout_ms``,
read by :class:`~pinpipe.log.kafka.KafkaLog`) are ignored here. Lag uses the high watermark of the last fetch, which Tansu 0.6
under-reports by up to one record batch: it is informational only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pinpipe.errors import ConfigError, LogUnavailableError, MissingExtraError
from pinpipe.log.base import EventLog, LogRecord, TopicPartition
from pinpipe.log.feed import Feed, ReleaseFn, ResumeFn, warn_committed_ahead
from pinpipe.tables import kind_of_topic
from pinpipe.telemetry.logs import get_logger

try:
    import confluent_kafka as ck
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise MissingExtraError("confluent-kafka", "kafka") from exc

log = get_logger("feed.kafka")

GROUP_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "fetch.wait.max.ms": 50,
    "enable.partition.eof": False,
}


def consumer_config(url: str, group: str) -> dict[str, Any]:
    """librdkafka settings for a group member from a ``kafka://`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise ConfigError(f"not a Kafka URL: {url!r}", hint="use kafka://HOST:PORT[,HOST:PORT]")
    extra = {k: v for k, v in parse_qsl(parts.query) if "." in k}  # librdkafka keys; pinpipe's own have no dot
    return {**GROUP_DEFAULTS, "bootstrap.servers": parts.netloc, "group.id": group, **extra}


class KafkaGroupFeed(Feed):
    """A confluent-kafka consumer in group ``group``, subscribed to ``prefix``'s kind topics."""

    def __init__(
        self, url: str, prefix: str, group: str, rescan_s: float = 5.0, close_with: EventLog | None = None
    ) -> None:
        self._close_with = close_with
        self.prefix = prefix
        self.group = group
        self.rescan_s = rescan_s
        try:
            self._consumer = ck.Consumer(consumer_config(url, group))
        except ck.KafkaException as exc:
            raise ConfigError(f"cannot create a Kafka consumer for {url}: {exc}", hint="check --log") from exc
        self._positions: dict[TopicPartition, int] = {}
        self._subscribed: frozenset[str] = frozenset()
        self._next_scan = 0.0
        self._assigned_once = False
        self._resume: ResumeFn | None = None
        self._release: ReleaseFn | None = None
        self._closed = False

    # ------------------------------------------------------------------------------------------ group callbacks

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        from_txn = self._resume(tps) if self._resume else {}
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(partitions, timeout=10)}
        ahead: dict[TopicPartition, int] = {}
        for p in partitions:
            tp = (p.topic, p.partition)
            p.offset = from_txn.get(tp, 0)  # silver's version is the truth; the group's commit is informational
            self._positions[tp] = p.offset
            if committed.get(tp, -1) > p.offset:
                ahead[tp] = committed[tp]
        if ahead:
            warn_committed_ahead(self.group, ahead, self._positions)
        consumer.assign(partitions)
        self._assigned_once = True
        log.info(
            "partitions assigned",
            extra={"fields": {"partitions": ",".join(f"{t}:{p}@{self._positions[(t, p)]}" for t, p in tps)}},
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._release is not None:
            self._release(tps)
        for tp in tps:
            self._positions.pop(tp, None)
        consumer.unassign()
        log.info("partitions revoked", extra={"fields": {"partitions": ",".join(f"{t}:{p}" for t, p in tps)}})

    # ------------------------------------------------------------------------------------------ Feed

    def open(self, resume: ResumeFn, release: ReleaseFn) -> None:
        self._resume, self._release = resume, release
        self._rescan(force=True)

    def _rescan(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_scan:
            return
        self._next_scan = now + self.rescan_s
        try:
            meta = self._consumer.list_topics(timeout=5)
        except ck.KafkaException as exc:
            raise LogUnavailableError(f"cannot list Kafka topics: {exc}", backend="kafka") from exc
        topics = frozenset(t for t in meta.topics if kind_of_topic(self.prefix, t) is not None)
        if topics and topics != self._subscribed:
            self._consumer.subscribe(
                sorted(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
            self._subscribed = topics
            log.info("subscribed", extra={"fields": {"topics": ",".join(sorted(topics))}})

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        self._rescan()
        if not self._subscribed:
            time.sleep(min(timeout_s, 0.1))
            return []
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=max(timeout_s, 0.0))
        except ck.KafkaException as exc:
            raise LogUnavailableError(f"Kafka consume failed: {exc}", backend="kafka") from exc
        out: list[LogRecord] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise LogUnavailableError(f"Kafka consumer failed: {err.str()}", backend="kafka")
                log.debug("consumer event", extra={"fields": {"error": err.str()}})
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:  # only error events lack them
                continue
            pos = self._positions.get((topic, partition))
            if pos is None or offset < pos:  # not ours any more, or already in silver
                continue
            self._positions[(topic, partition)] = offset + 1
            _, ts = msg.timestamp()
            out.append(LogRecord(topic, partition, offset, msg.value() or b"", msg.key(), max(ts, 0)))
        return out

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        offsets = [ck.TopicPartition(t, p, pos) for (t, p), pos in positions.items() if (t, p) in self._positions]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except ck.KafkaException as exc:
            raise LogUnavailableError(f"Kafka offset commit failed: {exc}", backend="kafka") from exc

    def lag(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for (t, p), pos in self._positions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(ck.TopicPartition(t, p), cached=True)
            except ck.KafkaException:
                continue
            out[(t, p)] = max(0, high - pos) if high >= 0 else 0
        return out

    def owned(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    @property
    def ready(self) -> bool:
        return self._assigned_once

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._release is not None and self._positions:
            self._release(list(self._positions))
        self._release = None  # close() leaves the group; the batch is already committed
        try:
            self._consumer.close()
        except (ck.KafkaException, RuntimeError) as exc:
            log.warning("Kafka consumer did not close cleanly", extra={"fields": {"error": str(exc)}})
        if self._close_with is not None:
            self._close_with.close()
