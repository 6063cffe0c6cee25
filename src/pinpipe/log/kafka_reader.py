"""One Kafka consumer for every partition a :class:`~pinpipe.log.kafka.KafkaLog` reads, with a buffer per partition.

Who calls what: :meth:`KafkaLog.read` calls :meth:`PartitionReader.read` for one (topic, partition) at a time (the
sink reads its partitions in turn). The first read of a partition adds it to the consumer's assignment
(``incremental_assign``) at the asked offset; the consumer then fetches every assigned partition in the background,
and messages of the partitions not being read wait in their buffers. A read at an offset other than where the
partition's buffer stops repositions that partition alone (unassigned, then assigned at the offset). A partition whose buffer holds
:data:`MAX_BUFFERED` records is paused until it is read, so memory stays bounded however many partitions are
assigned (64 partitions × 2,000 records of ~1 KiB: ~128 MiB at most). One consumer, hence one set of broker
connections and one fetch loop, whatever the partition count — where one consumer per partition does not reach
hundreds of partitions.

``enable.partition.eof`` tells when a partition's end is reached; once it was, a read with no ``timeout_s``
returns at once with what was fetched meanwhile instead of waiting for the broker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from pinpipe.errors import MissingExtraError, PinpipeError
from pinpipe.log.base import LogRecord, TopicPartition

try:
    import confluent_kafka as ck
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise MissingExtraError("confluent-kafka", "kafka") from exc

MAX_BUFFERED = 2_000
"""Records buffered for one partition before it is paused."""
FETCH_WAIT_S = 0.05
"""How long one ``consume`` call waits while the end of the partition being read is not known yet."""


class PartitionReader:
    """The consumer and the per-partition buffers (thread-safe: one read at a time)."""

    def __init__(self, consumer: ck.Consumer, map_error: Callable[[str, BaseException], PinpipeError]) -> None:
        self._consumer = consumer
        self._map = map_error
        self._lock = threading.Lock()
        self._buffers: dict[TopicPartition, deque[LogRecord]] = {}
        self._next: dict[TopicPartition, int] = {}
        """Per assigned partition: the offset after the last record buffered (where its buffer stops)."""
        self._eof: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()

    @property
    def assigned(self) -> int:
        return len(self._next)

    def read(self, tp: TopicPartition, offset: int, max_records: int, timeout_s: float) -> list[LogRecord]:
        with self._lock:
            try:
                return self._read(tp, offset, max_records, timeout_s)
            except BaseException:
                self._forget(tp)  # messages may have been consumed half-way: reposition on the next read
                raise

    def _position(self, tp: TopicPartition, offset: int) -> None:
        """Make ``offset`` the next record the buffer of ``tp`` yields."""
        buffer = self._buffers.get(tp)
        if buffer is not None:
            while buffer and buffer[0].offset < offset:
                buffer.popleft()
            if (buffer and buffer[0].offset == offset) or (not buffer and self._next[tp] == offset):
                return
        target = ck.TopicPartition(tp[0], tp[1], offset)
        try:
            if buffer is not None:  # reposition: leave and rejoin at the offset (a seek needs an active fetch)
                self._consumer.incremental_unassign([ck.TopicPartition(tp[0], tp[1])])
                self._paused.discard(tp)
            self._consumer.incremental_assign([target])
        except ck.KafkaException as exc:
            raise self._map(tp[0], exc) from exc
        self._buffers[tp] = deque()
        self._next[tp] = offset
        self._eof.discard(tp)

    def _read(self, tp: TopicPartition, offset: int, max_records: int, timeout_s: float) -> list[LogRecord]:
        self._position(tp, offset)
        buffer = self._buffers[tp]
        now = time.monotonic()
        deadline, hard = now + timeout_s, now + max(timeout_s, 1.0)
        while len(buffer) < max_records:
            # At a known end wait no longer than the caller allows (not at all for timeout_s=0), but always take
            # what the consumer fetched meanwhile.
            at_end = tp in self._eof
            wait = min(FETCH_WAIT_S, max(deadline - now, 0.0)) if at_end else FETCH_WAIT_S
            before = len(buffer)
            self._fetch(wait)
            now = time.monotonic()
            if buffer and (len(buffer) == before or tp in self._eof):  # this partition has nothing more now
                break
            if (tp in self._eof and now >= deadline) or now >= hard:
                break
        out = [buffer.popleft() for _ in range(min(max_records, len(buffer)))]
        if tp in self._paused and len(buffer) < MAX_BUFFERED // 2:
            self._consumer.resume([ck.TopicPartition(tp[0], tp[1])])
            self._paused.discard(tp)
        return out

    def _fetch(self, wait: float) -> None:
        """One ``consume`` call; each message goes to its partition's buffer."""
        try:
            # consume() waits its whole timeout unless the batch fills; poll() returns at the first message
            messages = self._consumer.consume(num_messages=1_000, timeout=0)
            if not messages and wait > 0:
                first = self._consumer.poll(wait)
                messages = [first, *self._consumer.consume(num_messages=999, timeout=0)] if first is not None else []
        except ck.KafkaException as exc:
            raise self._map("(any)", exc) from exc
        for msg in messages:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None:
                continue
            tp = (topic, partition)
            err = msg.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    if tp in self._next:  # its offset is not trusted: Tansu reports the last batch's base
                        self._eof.add(tp)
                    continue
                raise self._map(topic, ck.KafkaException(err))
            buffer = self._buffers.get(tp)
            if buffer is None or offset is None or offset < self._next[tp]:
                continue  # a message fetched before a seek: the partition was repositioned
            buffer.append(
                LogRecord(topic, partition, offset, msg.value() or b"", msg.key(), max(msg.timestamp()[1], 0))
            )
            self._next[tp] = offset + 1
            self._eof.discard(tp)
            if len(buffer) >= MAX_BUFFERED and tp not in self._paused:
                self._consumer.pause([ck.TopicPartition(topic, partition)])
                self._paused.add(tp)

    def _forget(self, tp: TopicPartition) -> None:
        if tp in self._buffers:
            self._buffers[tp].clear()
            self._next[tp] = -1  # never equal to a wanted offset: the next read seeks
            self._eof.discard(tp)

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
