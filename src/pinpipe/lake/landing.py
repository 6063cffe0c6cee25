"""The write side of the sink: cut batches become durable objects, in order, and only then committed positions.

Who calls what: :class:`~pinpipe.lake.sink.LakeSink` (the read loop) builds a :class:`Batch` with
:func:`encode_batch` and hands it to :meth:`Lander.submit`; one :class:`Lander` thread writes it with
:meth:`Lake.create <pinpipe.lake.store.Lake.create>` and then commits the partition's new position with
``EventLog.commit`` — at once when no other batch waits, otherwise together with the next ones (at least every
:data:`COMMIT_EVERY_S`), so a lander that falls behind spends fewer fsyncs on commits. Reading the next records
(CPU) overlaps with writing and fsyncing the previous object (I/O, without the GIL).

Order is what keeps it exactly once: one thread, one FIFO, so a partition's objects are written in offset order
and a position is committed only after every object before it is durable. The writes themselves run on up to
:data:`WRITERS` threads so that objects of *different* partitions are fsynced at the same time (fsyncs overlap
on the disk; one object's fsync no longer waits for another partition's): a partition's next object starts only
once its previous one is durable (a later object landed before an earlier one would make a restarted sink resume
past a gap), and the lander thread takes finished writes back in submission order, so what it commits is the
same as with one writer. A batch's key and bytes are fixed
when it is cut; a failed write is retried with the very same bytes (:data:`RETRY_FOR_S`, with back-off), and a
key that already exists is accepted only if it holds exactly those bytes (a retried put whose first attempt
succeeded); otherwise :class:`~pinpipe.errors.CorruptStateError`. Once the thread gives up, the error is raised
to the read loop by the next :meth:`Lander.submit` or :meth:`Lander.drain`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
WRITERS = 4
"""Objects written at once at most (each of another partition)."""
COMMIT_EVERY_S = 1.0
POLL_S = 0.002
"""How often the lander looks at writes under way while no new batch comes."""
_NOTHING = object()
"""Stands for "no new batch came within POLL_S" in the lander's loop."""
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
        writers: int = WRITERS,
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
        self.writers = max(1, writers)
        self._pool = ThreadPoolExecutor(self.writers, "pinpipe-sink-writer")
        self._writing: deque[tuple[Batch, Future[bool]]] = deque()
        """Writes under way, in submission order."""
        self._last_write: dict[tuple[str, int], Future[bool]] = {}
        """Each partition's latest write (its next one waits for it)."""
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
        self._pool.shutdown(wait=False, cancel_futures=True)

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
            item: Batch | threading.Event | object | None
            try:  # while writes are under way, look at them every POLL_S even when nothing new comes
                item = self._queue.get(timeout=POLL_S if self._writing else None)
            except queue.Empty:
                item = _NOTHING
            try:
                if item is None:
                    return
                if self.error is None:
                    if isinstance(item, Batch):
                        self._start_write(item)
                    self._reap(wait_all=isinstance(item, threading.Event))  # a drain marker waits for all
                    # Commit when nothing else waits (or at a drain marker, or every COMMIT_EVERY_S while
                    # catching up): one commit then covers several objects, all already durable.
                    quiet = not isinstance(item, Batch) and not self._writing
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
                if item is not _NOTHING:
                    self._queue.task_done()

    def _retrying(self, step: Callable[..., None], *args: Batch) -> None:
        retry.call(LANDING, step, *args)

    def _start_write(self, batch: Batch) -> None:
        """Hand ``batch`` to a writer thread (after its partition's previous write), waiting first while
        ``writers`` writes are under way."""
        while len(self._writing) >= self.writers:
            self._writing[0][1].exception()  # wait for the oldest: it finishes first or with the others
            self._reap(wait_all=False)
        tp = (batch.topic, batch.partition)
        previous = self._last_write.get(tp)
        future = self._pool.submit(self._write_after, previous, batch)
        self._last_write[tp] = future
        self._writing.append((batch, future))

    def _write_after(self, previous: Future[bool] | None, batch: Batch) -> bool:
        """(On a writer thread.) Write ``batch`` once the partition's previous object is durable; True when it
        was written, False when it was already there with the same bytes."""
        if previous is not None and previous.exception() is not None:
            raise CorruptStateError(f"{batch.key} was not written: an earlier object of its partition failed")
        return retry.call(LANDING, self._write, batch)

    def _reap(self, *, wait_all: bool) -> None:
        """Take finished writes back in submission order (all of them with ``wait_all``); the first failure is
        raised (the lander then stops: what follows it is never committed)."""
        while self._writing and (wait_all or self._writing[0][1].done()):
            batch, future = self._writing.popleft()
            written = future.result()
            if self._last_write.get((batch.topic, batch.partition)) is future:
                del self._last_write[(batch.topic, batch.partition)]
            self._landed[(batch.topic, batch.partition)] = batch.end
            self._count(batch, written)

    def _write(self, batch: Batch) -> bool:
        if not self.lake.create(batch.key, batch.data):
            if self.lake.get(batch.key) != batch.data:
                raise CorruptStateError(
                    f"{batch.key} already exists in {self.lake.url} with other content",
                    hint="another sink may be landing the same log into this lake; run one sink per lake",
                    key=batch.key,
                )
            return False
        return True

    def _count(self, batch: Batch, written: bool) -> None:
        if not written:
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
