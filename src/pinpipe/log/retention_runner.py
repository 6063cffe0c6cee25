"""Retention in the embedded log's writer process: the pass at open, the size rule in every roll, the retention
thread (segment summaries after each roll, a full pass after each roll and every ``retention_check_ms``), and the
warnings an operator needs when a group holds retention back.

Who calls what: :meth:`EmbeddedLog._acquire_writer <pinpipe.log.embedded.EmbeddedLog>` (``pinpipe api``, when it
takes the writer lock) builds a :class:`RetentionRunner`, calls :meth:`~RetentionRunner.run_once` and
:meth:`~RetentionRunner.start`; its writer thread calls :meth:`~RetentionRunner.poke` after each batch that rolled
a segment; :meth:`EmbeddedLog.close` calls :meth:`~RetentionRunner.stop`. What one pass does is
:mod:`pinpipe.log.retention`, what a summary is :mod:`pinpipe.log.segment_summary`.

:meth:`~RetentionRunner.poke` runs the **size rule on the writer thread**, before it returns: the writer takes its
next batch only once the partition's closed segments are back within ``retention_bytes - 2 × segment_bytes``, so
no timing lets appends outrun retention (the guarantee is in :mod:`pinpipe.log.retention`). That pass is cheap —
the segments it deletes were summarised by the thread when they closed, so it writes ``retired.json``, fsyncs and
unlinks — and it waits only for a thread pass in progress (one pass at a time). The thread then counts the segment
that closed and runs the age rule, off the writer's path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pinpipe.errors import PinpipeError
from pinpipe.log.commits import FileCommitStore
from pinpipe.log.integrity import skipped_offsets
from pinpipe.log.retention import Clock, PassResult, RetentionPolicy, apply, wall_clock_ms
from pinpipe.log.retired import read_retired
from pinpipe.log.segment_summary import summarise_closed
from pinpipe.telemetry.logs import get_logger

log = get_logger("log.retention")


class RetentionRunner:
    """Runs passes in the writer process: at open, every ``retention_check_ms``, and when poked (a roll: the size
    rule at once, on the caller's thread; summaries and the rest on the retention thread)."""

    def __init__(
        self,
        log_dir: Path,
        policy: RetentionPolicy,
        topics: Callable[[], Mapping[str, int]],
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.log_dir = log_dir
        self.policy = policy
        self.topics = topics
        self.clock = clock
        self.commits = FileCommitStore(log_dir / "commits")
        self.passes = 0
        self.roll_passes = 0
        """Passes :meth:`poke` ran on the writer thread (included in ``passes``)."""
        self.summarised = 0
        """Closed segments the thread read to summarise them."""
        self.read_by_passes = 0
        """Segments passes read as they deleted them (no summary that checked out yet)."""
        self._known: dict[tuple[str, int], set[int]] = {}
        self._warned_groups: set[str] = set()
        self._warned_held: set[tuple[str, int, int]] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run_once(self, topics: Mapping[str, int] | None = None, size_only: bool = False) -> PassResult:
        """One pass over ``topics`` (default: the log's topics now) — at open, the caller passes them: it holds
        the lock that reading them takes. ``size_only``: by the size rule alone (the pass of a roll)."""
        held_topics = self.topics() if topics is None else topics
        now_ms = self.clock()
        with self._lock:
            result = apply(self.log_dir, held_topics, self.policy, now_ms, self.commits, self._warned_groups, size_only)
            self.passes += 1
            self.read_by_passes += result.read
        bound = self.policy.retention_bytes
        for held in result.held:
            key = (held.topic, held.partition, held.segment.base)
            if key in self._warned_held or held.held_by is None:
                continue
            self._warned_held.add(key)
            left = result.bytes.get((held.topic, held.partition), 0)
            log.warning(
                "retention held back by a consumer group that has not committed the segment"
                + (": the partition is over log.retention_bytes" if bound >= 0 and left > bound else ""),
                extra={
                    "fields": {
                        "topic": held.topic,
                        "partition": held.partition,
                        "group": held.held_by[0],
                        "committed": held.held_by[1],
                        "segment_base": held.segment.base,
                        "segment_end": held.segment.end,
                        "reason": held.reason,
                        "bytes": left,
                        "retention_bytes": bound,
                    }
                },
            )
        return result

    def start(self) -> None:
        if self._thread is None and self.policy.deletes:
            self._thread = threading.Thread(target=self._loop, name="pinpipe-log-retention", daemon=True)
            self._thread.start()

    def poke(self) -> None:
        """A segment rolled (the writer thread calls this after the batch that rolled it is acknowledged, before
        it takes the next): run the size rule now, on this thread, then wake the retention thread. Does nothing
        once stopped. A failed pass is logged, never raised: appends go on, the next roll or check tries again."""
        if self._stop.is_set():
            return
        if self.policy.retention_bytes >= 0:
            try:
                self.run_once(size_only=True)
                self.roll_passes += 1
            except (PinpipeError, OSError) as exc:
                log.error("retention pass of a roll failed", extra={"fields": {"error": str(exc)}})
            except Exception:  # a bug here must not stop the writer thread (every later append would hang)
                log.exception("retention pass of a roll failed")
        self._wake.set()

    def summarise(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Give every closed segment a summary that checks out (:func:`summarise_closed`); how many were read. The
        thread calls it when it starts and after every roll (``stopping``: its stop flag, checked before each
        segment); never under the pass lock, so a roll's pass does not wait for a segment being read."""
        skips = skipped_offsets(self.log_dir)
        read = 0
        for topic, n in sorted(self.topics().items()):
            for p in range(n):
                directory = self.log_dir / topic / str(p)
                known = self._known.setdefault((topic, p), set())
                start = read_retired(directory).log_start
                skipped = skips.get((topic, p), frozenset())
                read += summarise_closed(directory, topic, p, start, skipped, known, stopping)
        self.summarised += read
        return read

    def _background(self) -> None:
        try:
            self.summarise(self._stop.is_set)
        except (PinpipeError, OSError) as exc:  # a pass reads what is missing itself
            log.error("segment summaries failed", extra={"fields": {"error": str(exc)}})

    def _loop(self) -> None:
        self._background()
        while not self._stop.is_set():
            self._wake.wait(self.policy.retention_check_ms / 1000)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._background()
            try:
                self.run_once()
            except (PinpipeError, OSError) as exc:  # the next pass tries again; appends are not affected
                log.error("retention pass failed", extra={"fields": {"error": str(exc)}})

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join()
            self._thread = None
