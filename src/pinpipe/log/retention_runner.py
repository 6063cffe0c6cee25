"""The retention thread of the embedded log's writer process: passes at open, every ``retention_check_ms`` and
after each roll, and the warnings an operator needs when a group holds retention back.

Who calls what: :meth:`EmbeddedLog._acquire_writer <pinpipe.log.embedded.EmbeddedLog>` (``pinpipe api``, when it
takes the writer lock) builds a :class:`RetentionRunner`, calls :meth:`~RetentionRunner.run_once` and
:meth:`~RetentionRunner.start`; its writer thread calls :meth:`~RetentionRunner.poke` after a roll;
:meth:`EmbeddedLog.close` calls :meth:`~RetentionRunner.stop`. What one pass does is :mod:`pinpipe.log.retention`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pinpipe.errors import PinpipeError
from pinpipe.log.commits import FileCommitStore
from pinpipe.log.retention import Clock, PassResult, RetentionPolicy, apply, wall_clock_ms
from pinpipe.telemetry.logs import get_logger

log = get_logger("log.retention")


class RetentionRunner:
    """Runs passes in the writer process: at open, every ``retention_check_ms``, and when poked (a roll)."""

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
        self._warned_groups: set[str] = set()
        self._warned_held: set[tuple[str, int, int]] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run_once(self, topics: Mapping[str, int] | None = None) -> PassResult:
        """One pass over ``topics`` (default: the log's topics now) — at open, the caller passes them: it holds
        the lock that reading them takes."""
        held_topics = self.topics() if topics is None else topics
        with self._lock:
            result = apply(self.log_dir, held_topics, self.policy, self.clock(), self.commits, self._warned_groups)
            self.passes += 1
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
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.policy.retention_check_ms / 1000)
            self._wake.clear()
            if self._stop.is_set():
                return
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
