"""The Kafka event log (``kafka://HOST:PORT[,HOST:PORT][?timeout_ms=10000]``) over confluent-kafka.

Who calls what: as for every :class:`~pinpipe.log.base.EventLog` (API appends; sink and stream read and commit).

- **append**: an idempotent producer with ``acks=all``; each record's partition is chosen here with
  :func:`~pinpipe.log.base.partition_for` (the same CRC32 placement as the other backends), and ``append`` returns
  after every delivery report arrived (a background thread polls the producer). A delivery that does not succeed
  within ``timeout_ms`` raises LogUnavailableError.
- **read**: one assigned (not subscribed) consumer for every partition read, kept for the log's lifetime, with a
  bounded buffer per partition (:class:`~pinpipe.log.kafka_reader.PartitionReader`): a caller that reads
  partitions in turn (the sink) never repositions one, all keep fetching ahead in the background, and the count
  of broker clients does not grow with the partitions.
- **end_offset**: never the broker's watermarks (Tansu under-reports the high watermark: it gives the base of the
  last batch); a probe consumer (one per log, kept, with a short ``fetch.wait.max.ms`` so the broker answers at
  the end at once) starts at the reported watermark and reads to the partition EOF, whose offset is the true end.
- **commit/committed**: consumer-group offset commits (``commit(offsets=..., asynchronous=False)`` /
  ``committed``) by a group-named consumer that never joins, so commits do not trigger rebalances.
- Tansu needs ``session.timeout.ms=6000`` and ``heartbeat.interval.ms=1000`` for groups to join quickly; both are set.

KafkaException and delivery errors are mapped here, once: unknown topic → UnknownTopicError, everything else →
LogUnavailableError.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pinpipe.errors import (
    ConfigError,
    LogUnavailableError,
    MissingExtraError,
    PinpipeError,
    UnknownTopicError,
    mapped_class,
)
from pinpipe.log.base import SOLE, Capabilities, EventLog, LogRecord, Share, partition_for, split_url
from pinpipe.log.feed import Feed
from pinpipe.log.kafka_feed import KafkaGroupFeed
from pinpipe.log.kafka_reader import PartitionReader
from pinpipe.telemetry.logs import get_logger

try:  # the backend alone imports its SDK; a missing extra says what to install when the log is opened
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise MissingExtraError("confluent-kafka", "kafka") from exc

_GROUP_TIMEOUTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
_FETCH_WAIT_S = 0.05
"""How long one ``consume`` call waits for a message while the end of the partition is not known yet."""


class KafkaLog(EventLog):
    capabilities = Capabilities(durable=True, shared=True, consumer_groups=True)

    def __init__(self, bootstrap: str, timeout_ms: int = 10_000) -> None:
        self.url = f"kafka://{bootstrap}"
        self.bootstrap = bootstrap
        self.timeout_s = timeout_ms / 1000
        self._common: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": min(timeout_ms, 60_000),
            "logger": get_logger("log.kafka"),  # librdkafka's lines go through pinpipe's logging, not raw stderr
        }
        self._admin = AdminClient(self._common)
        self._producer = ck.Producer(
            {
                **self._common,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "message.timeout.ms": timeout_ms,
                "request.timeout.ms": min(timeout_ms, 30_000),
            }
        )
        self._partitions: dict[str, int] = {}
        self._rr = 0
        self._lock = threading.Lock()
        self._reader_lock = threading.Lock()
        self._reader: PartitionReader | None = None
        self._probe_lock = threading.Lock()
        self._probe: Any = None
        self._groups: dict[str, Any] = {}
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="pinpipe-kafka-poll", daemon=True)
        self._poller.start()

    @classmethod
    def from_url(cls, url: str) -> KafkaLog:
        brokers, query = split_url(url, "kafka", "broker", "kafka://HOST:PORT[,HOST:PORT]")
        try:
            timeout_ms = int(query.get("timeout_ms", "10000"))
        except ValueError as exc:
            raise ConfigError(f"timeout_ms in {url!r} is not an integer") from exc
        return cls(brokers, timeout_ms)

    # ------------------------------------------------------------------------------------------ errors

    def _unavailable(self, what: str, exc: BaseException) -> PinpipeError:
        return self._map(what, None, exc)

    def _map(self, what: str, topic: str | None, exc: BaseException) -> PinpipeError:
        """The tree error for a confluent-kafka error (the rules are :data:`pinpipe.errors.FOREIGN_ERRORS`)."""
        target = mapped_class("kafka", exc) or LogUnavailableError
        if target is UnknownTopicError:
            return UnknownTopicError(f"topic {topic!r} does not exist on {self.url}", topic=topic, backend="kafka")
        return target(f"Kafka at {self.bootstrap} could not {what}: {exc}", topic=topic, backend="kafka")

    # ------------------------------------------------------------------------------------------ metadata

    def _metadata(self, topic: str | None = None) -> dict[str, int]:
        try:
            md = self._admin.list_topics(topic=topic, timeout=self.timeout_s)
        except ck.KafkaException as exc:
            raise self._unavailable("list topics", exc) from exc
        return {
            name: len(t.partitions) for name, t in md.topics.items() if t.error is None and not name.startswith("__")
        }

    def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            n = self._metadata().get(topic)
            if n is None:
                raise UnknownTopicError(f"topic {topic!r} does not exist on {self.url}", topic=topic)
            self._partitions[topic] = n
        return n

    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        existing = self._metadata()
        missing = [t for t in topics if t not in existing]
        if missing:
            futures = self._admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
            for topic, fut in futures.items():
                try:
                    fut.result(self.timeout_s)
                except ck.KafkaException as exc:
                    if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                        raise self._unavailable(f"create topic {topic}", exc) from exc
        self._partitions.update(self._metadata())

    def topics(self) -> dict[str, int]:
        found = self._metadata()
        self._partitions.update(found)
        return found

    # ------------------------------------------------------------------------------------------ writing

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def append(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        if not values:
            return []
        n = self._partition_count(topic)
        out: list[tuple[int, int]] = [(-1, -1)] * len(values)
        errors: list[Any] = []
        remaining = [len(values)]
        done = threading.Event()

        def report(i: int) -> Any:
            def on_delivery(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    out[i] = (msg.partition(), msg.offset())
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

            return on_delivery

        for i, value in enumerate(values):
            key = keys[i] if keys is not None else None
            with self._lock:
                self._rr += 1
                p = partition_for(key, n, self._rr)
            while True:
                try:
                    self._producer.produce(topic, value, key, partition=p, on_delivery=report(i))
                    break
                except BufferError:
                    time.sleep(0.01)
                except ck.KafkaException as exc:
                    raise self._map("produce", topic, exc) from exc
        if not done.wait(self.timeout_s + 1):
            raise LogUnavailableError(f"Kafka at {self.bootstrap} did not confirm delivery in time", backend="kafka")
        if errors:
            err = errors[0]
            if err.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise UnknownTopicError(f"topic {topic!r} does not exist on {self.url}", topic=topic)
            raise self._unavailable("deliver records", err)
        return out

    # ------------------------------------------------------------------------------------------ reading

    def _consumer(self, group: str, eof: bool = True, fetch_wait_ms: int | None = None) -> Any:
        config = {
            **self._common,
            **_GROUP_TIMEOUTS,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": eof,
            "auto.offset.reset": "earliest",
        }
        if fetch_wait_ms is not None:
            config["fetch.wait.max.ms"] = fetch_wait_ms
        return ck.Consumer(config)

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> list[LogRecord]:
        self._partition_count(topic)
        with self._reader_lock:
            if self._reader is None:
                consumer = self._consumer(f"pinpipe-reader-{uuid.uuid4().hex[:8]}", fetch_wait_ms=50)
                self._reader = PartitionReader(consumer, lambda t, exc: self._map("read", t, exc))
            reader = self._reader
        return reader.read((topic, partition), offset, max_records, timeout_s)

    def consume(
        self,
        prefix: str,
        group: str,
        share: Share = SOLE,
        *,
        owns_log: bool = False,
    ) -> Feed:
        """A member of consumer group ``group``: Kafka's coordinator shares the partitions (``share`` does not
        apply)."""
        if share.leases:
            raise ConfigError("--leases is for logs without consumer groups", hint="on Kafka, drop --leases")
        return KafkaGroupFeed(self.url, prefix, group, close_with=self if owns_log else None)

    def end_offset(self, topic: str, partition: int) -> int:
        self._partition_count(topic)
        with self._probe_lock:
            if self._probe is None:
                # The broker answers a fetch at the end after fetch.wait.max.ms (default 500): keep it short here.
                self._probe = self._consumer(f"pinpipe-probe-{uuid.uuid4().hex[:8]}", fetch_wait_ms=10)
            probe = self._probe
            tp = ck.TopicPartition(topic, partition)
            try:
                hint = max(0, probe.get_watermark_offsets(tp, timeout=self.timeout_s)[1])
                probe.assign([ck.TopicPartition(topic, partition, hint)])
            except ck.KafkaException as exc:
                raise self._map("read watermarks", topic, exc) from exc
            end, deadline = hint, time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for msg in probe.consume(num_messages=10_000, timeout=0.01):
                    if msg.partition() != partition or msg.topic() != topic:
                        continue  # left over from the previous call's partition
                    err = msg.error()
                    if err is None:
                        end = msg.offset() + 1
                    elif err.code() == ck.KafkaError._PARTITION_EOF:
                        return int(max(end, msg.offset()))
                    else:
                        raise self._map("read", topic, ck.KafkaException(err))
            raise LogUnavailableError(f"Kafka at {self.bootstrap} did not reach the end of {topic}", backend="kafka")

    def _group(self, group: str) -> Any:
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = self._groups.setdefault(group, self._consumer(group, eof=False))
        return consumer

    def committed(self, group: str, topic: str) -> dict[int, int]:
        n = self._partition_count(topic)
        tps = [ck.TopicPartition(topic, p) for p in range(n)]
        try:
            found = self._group(group).committed(tps, timeout=self.timeout_s)
        except ck.KafkaException as exc:
            raise self._map("read commits", topic, exc) from exc
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._partition_count(topic)
        offsets = [ck.TopicPartition(topic, p, pos) for p, pos in positions.items()]
        try:
            self._group(group).commit(offsets=offsets, asynchronous=False)
        except ck.KafkaException as exc:
            raise self._map("commit", topic, exc) from exc

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._poller.join()
        self._producer.flush(1.0)
        with self._reader_lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        for consumer in self._groups.values():
            consumer.close()
        self._groups.clear()
