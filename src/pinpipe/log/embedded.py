"""The embedded durable event log (``file://DIR``, the default): files on local disk, fsync before ack.

Who calls what: the API process calls :meth:`EmbeddedLog.append` (from many threads at once); sink and stream
processes call :meth:`EmbeddedLog.read` (the sink :meth:`EmbeddedLog.read_values`), :meth:`EmbeddedLog.commit` and
:meth:`EmbeddedLog.committed`.

- **Layout**: ``DIR/topics.json`` (topic → partition count), ``DIR/<topic>/<partition>/`` holding the
  partition's segments ``<base>.data``/``<base>.index`` (or the old single ``data``/``index``) and its
  ``retired.json`` (format in :mod:`pinpipe.log.segment`), ``DIR/commits/<group>/<topic>.json``
  (:class:`~pinpipe.log.commits.FileCommitStore`), ``DIR/writer.lock``. Readers go through one
  :class:`~pinpipe.log.view.PartitionView` per partition.
- **One writer process, many readers**: the first ``append`` (or ``ensure_topics`` that creates a topic) takes an
  exclusive ``flock`` on ``writer.lock``; a second process that tries to write gets a ConfigError naming the
  holder's pid. Readers need no lock: they see a record once its index entry exists, which the writer adds only
  after the record is fsynced. Taking the lock recovers every partition (torn tails are truncated, lost index
  entries rebuilt), so a crashed writer's successor starts clean.
- **Group commit**: ``append`` hands its records to one writer thread and waits. The thread takes everything
  pending, writes it, fdatasyncs each touched partition once and publishes — concurrent appenders share fsyncs.
- **Integrity** (:mod:`pinpipe.log.integrity`): reading an indexed record that no longer checks out raises
  CorruptStateError naming topic, partition and offset; readers and recovery (which checks every record of
  each active segment) note it in ``DIR/corrupt.json`` for ``/healthz``. ``pinpipe log repair`` skips it (``DIR/skipped.json``). A failed
  append is truncated away before its caller hears of it (a 503'd record never reappears); offsets never go back
  (:mod:`pinpipe.log.partition`); new partition directories and the ``topics.json`` rename are fsynced.
- **Segments and retention** (:mod:`pinpipe.log.partition`, :mod:`pinpipe.log.retention`): the active segment
  rolls at ``segment_bytes`` / ``segment_ms``; the writer process runs retention at open, every
  ``retention_check_ms`` and after each roll, deleting closed segments past ``retention_ms`` / ``retention_bytes``
  that every live consumer group has committed, after recording what they held in ``retired.json``. A read below
  the log start starts at the log start. The policy is ``LogSettings``' (``pinpipe api`` passes its settings with
  :meth:`EmbeddedLog.configure`; a log opened without it uses the defaults: Kafka's).
- Topics are created with a fixed partition count.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TypeVar

from pinpipe.config import LogSettings
from pinpipe.errors import ConfigError, CorruptStateError, LogUnavailableError, UnknownTopicError
from pinpipe.log import integrity, segment
from pinpipe.log.base import Capabilities, EventLog, LogRecord, ValueBlock
from pinpipe.log.commits import FileCommitStore
from pinpipe.log.feed import StaticConsumer
from pinpipe.log.group_commit import Pending, write_batch
from pinpipe.log.partition import PartitionWriter, RecoveryReport, open_writer
from pinpipe.log.retention import Clock, PassResult, RetentionPolicy, wall_clock_ms
from pinpipe.log.retention_runner import RetentionRunner
from pinpipe.log.retired import Retired, read_retired
from pinpipe.log.topics import TopicsFile
from pinpipe.log.view import PartitionView
from pinpipe.telemetry.logs import get_logger

_POLL_S = 0.005
_GATHER_S = 0.0005
_GATHER_MIN = 32
"""A batch smaller than this waits up to _GATHER_S for more appenders before its fsync (group commit)."""
log = get_logger("log.embedded")
_T = TypeVar("_T")

_Pending = Pending


class EmbeddedLog(StaticConsumer, EventLog):
    capabilities = Capabilities(durable=True, shared=True, consumer_groups=False, group_commit=True)

    def __init__(
        self, directory: str | Path, policy: RetentionPolicy | None = None, clock: Clock = wall_clock_ms
    ) -> None:
        self.path = Path(directory)
        self.policy = policy or RetentionPolicy()
        self.clock = clock
        self.retention: RetentionRunner | None = None
        self.url = f"file://{self.path}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the log directory {self.path}: {exc}", hint="check --log") from exc
        self._commits = FileCommitStore(self.path / "commits")
        self._skips = integrity.SkipList(self.path)
        self._meta_lock = threading.Lock()
        self._topics = TopicsFile(self.path)
        self._views: dict[tuple[str, int], PartitionView] = {}
        self._writers: dict[tuple[str, int], PartitionWriter] = {}
        self._lock_fd: int | None = None
        self._rr = itertools.count(1)
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._last_batch = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> EmbeddedLog:
        rest = url.partition("://")[2]
        if not rest:
            raise ConfigError(
                f"event log URL {url!r} has no directory", hint="use file://DIR, e.g. file://pinpipe-data/log"
            )
        return cls(rest)

    def configure(self, settings: LogSettings) -> None:
        """Take segment and retention settings (``pinpipe api`` calls this before its first write; a writer
        already open keeps its partitions' segment sizes until it reopens)."""
        self.policy = RetentionPolicy.from_settings(settings)
        if self.retention is not None:
            self.retention.policy = self.policy

    # ------------------------------------------------------------------------------------------ metadata

    def _load_topics(self) -> dict[str, int]:
        return self._topics.load(sole_writer=self._lock_fd is not None)

    def _partitions(self, topic: str) -> int:
        with self._meta_lock:
            n = self._load_topics().get(topic)
        if n is None:
            raise UnknownTopicError(
                f"topic {topic!r} does not exist in {self.url}", hint="create it with ensure_topics", topic=topic
            )
        return n

    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        TopicsFile.check_names(topics)
        with self._meta_lock:
            if all(t in self._load_topics() for t in topics):
                return
            self._acquire_writer()
            self._topics.add(topics, partitions)

    def topics(self) -> dict[str, int]:
        with self._meta_lock:
            return dict(self._load_topics())

    # ------------------------------------------------------------------------------------------ writing

    def _acquire_writer(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.path / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"another process (pid {holder}) is already writing to the event log {self.url}",
                hint="run one writer (one `pinpipe api`) per log directory, or give this one its own --log",
                pid=holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        try:
            for topic, n in self._load_topics().items():  # recover every partition before the first write
                for p in range(n):
                    self._writer_for(topic, p)
            self.retention = RetentionRunner(self.path, self.policy, self._topics_now, self.clock)
            self.retention.run_once(dict(self._load_topics()))  # at open, before the first write
            self.retention.start()
        except BaseException:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            self._lock_fd = None
            os.close(fd)
            raise

    def _writer_for(self, topic: str, partition: int) -> PartitionWriter:
        key = (topic, partition)
        writer = self._writers.get(key)
        if writer is None:
            writer = open_writer(
                self.path,
                topic,
                partition,
                self._skips.offsets(topic, partition),
                self._commits.highest(topic),
                self.policy.segment_bytes,
                self.policy.segment_ms,
            )
            self._writers[key] = writer
        return writer

    def run_retention(self) -> PassResult:
        """Take the writer lock (so recover every partition, and run the pass that opening runs), then one more
        retention pass; what it deleted and held back (``pinpipe log retention``)."""
        with self._meta_lock:
            self._acquire_writer()
        assert self.retention is not None
        return self.retention.run_once()

    def recovery_report(self, topic: str, partition: int) -> RecoveryReport:
        """What recovery found when this writer opened the partition."""
        return self._writers[(topic, partition)].recovery

    def _topics_now(self) -> dict[str, int]:
        with self._meta_lock:
            return dict(self._load_topics())

    def append(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        return self.submit(topic, values, keys).result()

    def submit(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> Future[list[tuple[int, int]]]:
        """Like :meth:`append` but returns at once with a future (the API waits without a thread per request;
        :attr:`Capabilities.group_commit`). The future's result is the ``(partition, offset)`` list once durable."""
        if keys is not None and len(keys) != len(values):
            raise ValueError("keys and values must have the same length")
        if self._closed:
            raise LogUnavailableError(f"event log {self.url} is closed", backend="file")
        if self._lock_fd is None or topic not in self._topics:
            self._partitions(topic)
            with self._meta_lock:
                self._acquire_writer()
        fut: Future[list[tuple[int, int]]] = Future()
        if not values:
            fut.set_result([])
            return fut
        with self._cond:
            if self._closed:  # checked again under the lock: the writer may have left after the last pending
                raise LogUnavailableError(f"event log {self.url} is closed", backend="file")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pinpipe-log-writer", daemon=True)
                self._thread.start()
            self._pending.append((topic, values, keys, fut))
            # Every waiter: readers in this process wait on the same condition, and waking one of them instead of
            # the writer would leave this append unwritten until the next one.
            self._cond.notify_all()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                # Only when appenders are concurrent (the last batch had several) is it worth waiting a moment
                # for more to join this fsync; a lone sequential appender never waits.
                gather = self._last_batch > 1 and len(self._pending) < _GATHER_MIN and not self._closed
            if gather:
                time.sleep(_GATHER_S)
            with self._cond:
                batch, self._pending = self._pending, []
            self._last_batch = len(batch)
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Pending]) -> None:
        rolled = write_batch(batch, self.clock(), self._partitions, self._writer_for, self._writers, self._rr, self.url)
        with self._cond:
            self._cond.notify_all()
        if rolled and self.retention is not None:
            self.retention.poke()

    # ------------------------------------------------------------------------------------------ reading

    def _skipped(self, topic: str, partition: int) -> segment.Skipped:
        return lambda offset: offset in self._skips.offsets(topic, partition)

    def _guarded(self, read: Callable[[], _T]) -> _T:
        """``read()`` with its OSError mapped to LogUnavailableError, and a corrupt record noted and named."""
        try:
            return read()
        except OSError as exc:
            raise LogUnavailableError(f"cannot read {self.url}: {exc}", backend="file") from exc
        except CorruptStateError as exc:
            raise integrity.reader_error(exc, self.path, self.url) from exc

    def _view(self, topic: str, partition: int) -> PartitionView:
        key = (topic, partition)
        view = self._views.get(key)
        if view is None:
            n = self._partitions(topic)
            if not 0 <= partition < n:
                raise UnknownTopicError(f"topic {topic!r} has no partition {partition}", topic=topic)
            with self._meta_lock:
                view = self._views.setdefault(key, PartitionView(self.path / topic / str(partition), topic, partition))
        return view

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> list[LogRecord]:
        """Records from ``offset`` on (from the log start when ``offset`` is below it: those were retired)."""
        deadline = time.monotonic() + timeout_s
        view = self._view(topic, partition)
        skipped = self._skipped(topic, partition)
        while True:
            records, after = self._guarded(partial(view.read_records, offset, max_records, skipped))
            if records:
                return records
            if after > offset:  # only skipped (or retired) records there: look past them
                offset = after
                continue
            if not self._wait(deadline):
                return []

    def read_values(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> ValueBlock:
        """Values cut straight out of the data files by :func:`~pinpipe.log.segment.read_values` (CRC-checked);
        a block never spans two segments."""
        deadline = time.monotonic() + timeout_s
        view = self._view(topic, partition)
        skipped = self._skipped(topic, partition)
        while True:
            first, end, count, data = self._guarded(partial(view.read_values, offset, max_records, skipped))
            if count:
                return ValueBlock(first, end, count, data)
            if end > offset:  # only skipped (or retired) records there: look past them
                offset = end
                continue
            if not self._wait(deadline):
                return ValueBlock(offset, offset, 0, b"")

    def _wait(self, deadline: float) -> bool:
        """Wait a poll interval (woken early by this process's own appends); False once ``deadline`` passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with self._cond:
            self._cond.wait(min(remaining, _POLL_S))
        return True

    def end_offset(self, topic: str, partition: int) -> int:
        return self._guarded(self._view(topic, partition).end_offset)

    def log_start(self, topic: str, partition: int) -> int:
        """The first offset the partition still serves (every offset below it was retired)."""
        return self._guarded(self._view(topic, partition).log_start)

    def retired(self, topic: str, partition: int) -> Retired:
        """What retention deleted from the partition (:mod:`pinpipe.log.retired`)."""
        self._view(topic, partition)  # the topic and partition must exist
        return self._guarded(partial(read_retired, self.path / topic / str(partition)))

    def skipped_records(self) -> dict[tuple[str, int], frozenset[int]]:
        return integrity.skipped_offsets(self.path)

    def integrity_problems(self) -> list[dict[str, object]]:
        """Corrupt records noted in ``DIR/corrupt.json`` and not skipped since (``/healthz`` reports them)."""
        try:
            return list(integrity.open_problems(self.path))
        except (OSError, CorruptStateError) as exc:
            return [{"error": str(exc)}]

    def committed(self, group: str, topic: str) -> dict[int, int]:
        self._partitions(topic)
        return self._commits.committed(group, topic)

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._partitions(topic)
        self._commits.commit(group, topic, positions)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self.retention is not None:
            self.retention.stop()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for view in self._views.values():
            view.close()
        self._views.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
