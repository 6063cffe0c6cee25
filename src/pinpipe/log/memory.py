"""In-memory event log (``memory://NAME``): for tests and single-process demos, not durable.

Logs with the same name share their records within one process, so a test can hand the same log to an API and
a sink. :meth:`MemoryLog.fail` injects an outage: every call raises LogUnavailableError until
:meth:`MemoryLog.recover`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from pinpipe.errors import LogUnavailableError, UnknownTopicError
from pinpipe.log.base import Capabilities, EventLog, LogRecord, partition_for
from pinpipe.log.feed import StaticConsumer

_SHARED: dict[str, _State] = {}
_SHARED_LOCK = threading.Lock()


class _State:
    def __init__(self) -> None:
        self.partitions: dict[str, list[list[LogRecord]]] = {}
        self.commits: dict[tuple[str, str], dict[int, int]] = {}
        self.cond = threading.Condition()
        self.failing = False


class MemoryLog(StaticConsumer, EventLog):
    capabilities = Capabilities(durable=False, shared=False, consumer_groups=False)

    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        with _SHARED_LOCK:
            self._state = _SHARED.setdefault(name, _State())
        self._rr = 0

    @classmethod
    def from_url(cls, url: str) -> MemoryLog:
        return cls(url.partition("://")[2] or "default")

    def fail(self) -> None:
        """Make every call raise LogUnavailableError (fault injection)."""
        self._state.failing = True

    def recover(self) -> None:
        self._state.failing = False

    def _check(self) -> None:
        if self._state.failing:
            raise LogUnavailableError("memory log is failing (injected fault)", backend="memory")

    def _parts(self, topic: str) -> list[list[LogRecord]]:
        try:
            return self._state.partitions[topic]
        except KeyError:
            raise UnknownTopicError(f"topic {topic!r} does not exist", topic=topic) from None

    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        self._check()
        with self._state.cond:
            for topic in topics:
                self._state.partitions.setdefault(topic, [[] for _ in range(partitions)])

    def topics(self) -> dict[str, int]:
        self._check()
        with self._state.cond:
            return {t: len(p) for t, p in self._state.partitions.items()}

    def append(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        self._check()
        now = int(time.time() * 1000)
        out: list[tuple[int, int]] = []
        with self._state.cond:
            parts = self._parts(topic)
            for i, value in enumerate(values):
                key = keys[i] if keys is not None else None
                self._rr += 1
                p = partition_for(key, len(parts), self._rr)
                offset = len(parts[p])
                parts[p].append(LogRecord(topic, p, offset, bytes(value), key, now))
                out.append((p, offset))
            self._state.cond.notify_all()
        return out

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> list[LogRecord]:
        self._check()
        deadline = time.monotonic() + timeout_s
        with self._state.cond:
            part = self._parts(topic)[partition]
            while len(part) <= offset and (remaining := deadline - time.monotonic()) > 0:
                self._state.cond.wait(remaining)
            return part[offset : offset + max_records]

    def end_offset(self, topic: str, partition: int) -> int:
        self._check()
        with self._state.cond:
            return len(self._parts(topic)[partition])

    def committed(self, group: str, topic: str) -> dict[int, int]:
        self._check()
        with self._state.cond:
            return dict(self._state.commits.get((group, topic), {}))

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._check()
        with self._state.cond:
            self._state.commits.setdefault((group, topic), {}).update(positions)
