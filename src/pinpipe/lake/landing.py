"""The write side of the sink: cut batches become durable objects, in order, and only then committed positions.

Who calls what: :class:`~pinpipe.lake.sink.LakeSink` (the read loop) builds a :class:`Batch` with
:func:`encode_batch` and hands it to :meth:`Lander.submit`; one :class:`Lander` thread writes it with
:meth:`Lake.create <pinpipe.lake.store.Lake.create>` and then commits the partition's new position with
``EventLog.commit`` — at once when no other batch waits, otherwise together with the next ones (at least every
:data:`COMMIT_EVERY_S`), so a lander that falls behind spends fewer fsyncs on commits. Reading the next records
(CPU) overlaps with writing and fsyncing the previous object (I/O, without the GIL).

Order is what keeps it exactly once: one thread, one FIFO, so a partition's objects are written in offset order
and a position is committed only after every object before it is durable. A batch's key and bytes are fixed
when it is cut; a failed write is retried with the very same bytes (:data:`RETRY_FOR_S`, with back-off), and a
key that already exists is accepted only if it holds exactly those bytes (a retried put whose first attempt
succeeded); otherwise :class:`~pinpipe.errors.CorruptStateError`. Once the thread gives up, the error is raised
to the read loop by the next :meth:`Lander.submit` or :meth:`Lander.drain`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from pinpipe import retry
from pinpipe.errors import CorruptStateError, PinpipeError
from pinpipe.lake.store import Lake, landed_key
from pinpipe.log.base import EventLog
from pinpipe.telemetry.logs import get_logger
from pinpipe.telemetry.sink import SinkMetrics

RETRY_FOR_S = 120.0
LANDING = retry.SERVICE.but(timeout_s=RETRY_FOR_S)
"""A landing step (object write, commit) that failed with a retryable error is retried for RETRY_FOR_S."""
"""How long retryable failures (log or store unavailable) are retried before the sink gives up and raises."""
COMMIT_EVERY_S = 1.0
"""While objects keep coming, commit at least this often (otherwise once the queue is empty)."""
log = get_logger("sink")


@dataclass
class SinkStats:
    """What one sink run did (updated by the :class:`Lander` thread; read once it is drained)."""

    records: int = 0
    objects: int = 0
    bytes: int = 0
    rewrites: int = 0
    """Objects found already landed with identical bytes when writing (a retried put)."""
    busy_s: float = 0.0
    """Seconds from the start of the run to its last durable commit (excludes the final idle wait)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A cut batch: offsets ``start`` (first record) to ``end`` (position after the last), and its bytes."""

    topic: str
    partition: int
    start: int
    end: int
    records: int
    data: bytes

    @property
    def key(self) -> str:
        return landed_key(self.topic, self.partition, self.start)


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


class Lander:
    """One thread that writes batches durably and commits them, in submission order."""

    def __init__(
        self,
        log: EventLog,
        lake: Lake,
        group: str,
        stats: SinkStats,
        metrics: SinkMetrics | None = None,
        max_pending: int = 4,
    ) -> None:
        self.log = log
        self.lake = lake
        self.group = group
        self.stats = stats
        self.metrics = metrics
        self.error: Exception | None = None
        """Why the thread gave up (a PinpipeError, or a bug's exception); raised to the read loop."""
        self.started = time.monotonic()
        self._queue: queue.Queue[Batch | threading.Event | None] = queue.Queue(max_pending)
        self._landed: dict[tuple[str, int], int] = {}
        """Durable but not yet committed: (topic, partition) → position after its last landed object."""
        self._thread = threading.Thread(target=self._run, name="pinpipe-sink-lander", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        """Queue a batch (blocks while ``max_pending`` are waiting); raises the thread's error if it gave up."""
        self._put(batch)

    def drain(self) -> None:
        """Wait until every submitted batch is durable and committed; raises the thread's error if it gave up."""
        reached = threading.Event()
        self._put(reached)
        while not reached.wait(0.5):
            self._raise()
        self._raise()

    def close(self) -> None:
        """End the thread once what is queued is done (call :meth:`drain` first to wait for that)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(1.0)

    def _put(self, item: Batch | threading.Event) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        last_commit = time.monotonic()
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    if isinstance(item, Batch):
                        self._retrying(self._write, item)
                        self._landed[(item.topic, item.partition)] = item.end
                    # Commit when nothing else waits (or at a drain marker, or every COMMIT_EVERY_S while
                    # catching up): one commit then covers several objects, all already durable.
                    quiet = self._queue.empty() or not isinstance(item, Batch)
                    if self._landed and (quiet or time.monotonic() - last_commit >= COMMIT_EVERY_S):
                        self._retrying(self._commit_landed)
                        last_commit = time.monotonic()
                if isinstance(item, threading.Event):
                    item.set()
            except Exception as exc:  # kept and raised in the read loop's thread
                self.error = exc
                if isinstance(item, threading.Event):
                    item.set()
            finally:
                self._queue.task_done()

    def _retrying(self, step: Callable[..., None], *args: Batch) -> None:
        retry.call(LANDING, step, *args)

    def _write(self, batch: Batch) -> None:
        if not self.lake.create(batch.key, batch.data):
            if self.lake.get(batch.key) != batch.data:
                raise CorruptStateError(
                    f"{batch.key} already exists in {self.lake.url} with other content",
                    hint="another sink may be landing the same log into this lake; run one sink per lake",
                    key=batch.key,
                )
            self.stats.rewrites += 1
        self.stats.records += batch.records
        self.stats.objects += 1
        self.stats.bytes += len(batch.data)
        if self.metrics:
            self.metrics.landed(batch.topic, batch.partition, batch.records, len(batch.data))
        log.debug("landed", extra={"fields": {"key": batch.key, "records": batch.records}})

    def _commit_landed(self) -> None:
        by_topic: dict[str, dict[int, int]] = {}
        for (topic, partition), end in self._landed.items():
            by_topic.setdefault(topic, {})[partition] = end
        for topic, positions in by_topic.items():
            self.log.commit(self.group, topic, positions)
            for partition in positions:
                del self._landed[(topic, partition)]
            if self.metrics:
                for partition, position in positions.items():
                    self.metrics.position(topic, partition, position, self._end_offset(topic, partition))
        self.stats.busy_s = time.monotonic() - self.started

    def _end_offset(self, topic: str, partition: int) -> int | None:
        try:
            return self.log.end_offset(topic, partition)
        except PinpipeError:
            return None
