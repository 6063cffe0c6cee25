"""The event-log port: an append-only, partitioned, durable log of records per topic.

Who calls what:

- the ingestion API calls :meth:`EventLog.append` and answers 2xx only after it returns (records durable);
- the sink and the stream worker call :meth:`EventLog.read` from a position, and :meth:`EventLog.commit` once
  what they read is safely stored downstream; on restart they resume from :meth:`EventLog.committed`;
- the sink, which needs only the values, calls :meth:`EventLog.read_values` (one newline-joined block per call,
  no :class:`LogRecord` per record; backends with a cheaper way to produce it override it);
- the CLI and the API call :meth:`EventLog.ensure_topics` and :meth:`EventLog.topics`;
- the API calls :meth:`EventLog.submit` instead of ``append`` where :attr:`Capabilities.group_commit` is set;
- a stream worker calls :meth:`EventLog.consume` once for the :class:`~pinpipe.log.feed.Feed` of its partitions
  (how workers share them is the backend's: a consumer group on Kafka, a static split or DynamoDB leases
  elsewhere), then reads only through that feed.

Positions are per (topic, partition) integers: the *offset* of a record, and a consumer *position* is the
offset of the next record to read. Records with the same key always go to the same partition, so per-key order
is the append order. Backends raise :class:`pinpipe.errors.LogUnavailableError` when the log cannot serve a call
right now, and :class:`pinpipe.errors.UnknownTopicError` for a topic it does not hold — never their SDK's errors.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from pinpipe.errors import ConfigError

if TYPE_CHECKING:
    from pinpipe.log.feed import Feed


TopicPartition = tuple[str, int]
"""A partition of a topic: ``(topic, partition)``."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record as stored: where it is, its value bytes (a JSON object), its key and append time."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class ValueBlock:
    """Values of consecutive records of one partition, as :meth:`EventLog.read_values` returns them.

    ``data`` is every value followed by ``\\n`` (empty when ``count`` is 0). A value that itself holds a line
    break makes ``data`` hold more lines than records: :attr:`one_line_each` tells, and a caller that needs one
    line per record then reads the range ``[start, end)`` again with :meth:`EventLog.read`.
    """

    start: int
    """Offset of the first record (the requested offset when the block is empty)."""
    end: int
    """Position after the last record: where the next read starts (offsets may have gaps, as Kafka's do)."""
    count: int
    data: bytes

    @property
    def one_line_each(self) -> bool:
        """True when ``data`` holds exactly one line per record and no carriage return."""
        return self.data.count(b"\n") == self.count and b"\r" not in self.data


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees, so callers and tests can adapt instead of guessing."""

    durable: bool
    """``append`` returns only after the records would survive a crash of this process and the machine."""
    shared: bool
    """Several processes can use the same log at once (one writer, many readers at least)."""
    consumer_groups: bool
    """The backend balances partitions across the members of a group by itself (Kafka)."""
    group_commit: bool = False
    """:meth:`EventLog.submit` hands records to the backend's own writer and returns a future at once, so a caller
    waits for durability without a thread, and concurrent appends share one fsync (the embedded log)."""


@dataclass(frozen=True)
class Share:
    """How a stream worker shares a log's partitions with the other workers of its group, where the log has no
    group coordinator: worker ``index`` of ``workers`` in a static split, or, with ``leases`` (a
    ``dynamodb://TABLE`` URL), the partitions whose leases it holds (taken over ``lease_s`` after their holder
    stops renewing). Kafka's coordinator ignores it."""

    index: int = 0
    workers: int = 1
    leases: str | None = None
    lease_s: float = 10.0


SOLE = Share()
"""The only worker: every partition."""


def split_url(url: str, scheme: str, what: str, usage: str) -> tuple[str, dict[str, str]]:
    """``(netloc, {query key: last value})`` of a backend URL ``scheme://NETLOC[?k=v&...]``; a URL of another
    scheme or without the part before the path is a ConfigError naming ``what`` it should hold and ``usage``."""
    parts = urlsplit(url)
    if parts.scheme != scheme or not parts.netloc:
        raise ConfigError(f"{scheme} URL {url!r} names no {what}", hint=f"use {usage}")
    return parts.netloc, dict(parse_qsl(parts.query))


def partition_for(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """Partition of a keyed record for backends that choose it themselves (CRC32 of the key)."""
    if key is None or partitions == 1:
        return fallback % partitions
    return zlib.crc32(key) % partitions


class EventLog(ABC):
    """A durable partitioned log. Subclasses implement the abstract methods; all are thread-safe."""

    url: str
    capabilities: Capabilities

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> EventLog:
        """Open the backend from its URL (``scheme://...``); raise ConfigError naming what is wrong."""

    @abstractmethod
    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        """Create the topics that do not exist yet (existing ones keep their partition count)."""

    @abstractmethod
    def topics(self) -> dict[str, int]:
        """Every topic with its partition count."""

    @abstractmethod
    def append(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        """Append records in order; return ``(partition, offset)`` per record once all are durable.

        Either every record is appended or the call raises (no partial success is reported as success).
        Raises UnknownTopicError for a topic that does not exist, LogUnavailableError when it cannot write.
        """

    def submit(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> Future[list[tuple[int, int]]]:
        """Like :meth:`append`, returning a future of its result. Backends with :attr:`Capabilities.group_commit`
        return at once; this default appends first (the caller's thread waits) and returns a finished future."""
        done: Future[list[tuple[int, int]]] = Future()
        try:
            done.set_result(self.append(topic, values, keys))
        except Exception as exc:
            done.set_exception(exc)
        return done

    @abstractmethod
    def consume(
        self,
        prefix: str,
        group: str,
        share: Share = SOLE,
        *,
        owns_log: bool = False,
    ) -> Feed:
        """The feed of the kind topics of ``prefix`` that this stream worker owns in ``group``, shared with the
        group's other workers as ``share`` says. With ``owns_log``, closing the feed closes this log."""

    @abstractmethod
    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> list[LogRecord]:
        """Records of one partition from ``offset`` on, at most ``max_records``, in offset order.

        Waits up to ``timeout_s`` for at least one record when none is available; returns [] then.
        """

    def read_values(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> ValueBlock:
        """Like :meth:`read`, but only the values, newline-joined in one block (see :class:`ValueBlock`).

        This default builds the block from :meth:`read`; the embedded log overrides it to cut the values straight
        out of its data file (each record's CRC still checked) without building a :class:`LogRecord` per record.
        """
        records = self.read(topic, partition, offset, max_records, timeout_s)
        if not records:
            return ValueBlock(offset, offset, 0, b"")
        data = b"\n".join([*(r.value for r in records), b""])
        return ValueBlock(records[0].offset, records[-1].offset + 1, len(records), data)

    @abstractmethod
    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next appended record of this partition will get."""

    @abstractmethod
    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The committed position per partition of ``group`` on ``topic`` (partitions never committed are absent)."""

    @abstractmethod
    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Durably record ``group``'s next position per partition of ``topic``."""

    def skipped_records(self) -> dict[tuple[str, int], frozenset[int]]:
        """Offsets per (topic, partition) that an operator skipped as corrupt (``pinpipe log repair``): readers
        step over them and accounting reports them as skipped, not lost. [] for backends without repairs."""
        return {}

    def integrity_problems(self) -> list[dict[str, object]]:
        """Stored records known to be corrupt and not skipped by an operator (the API's ``/healthz`` reports them
        as degraded). Backends that keep no such knowledge (brokers check their own data) return []."""
        return []

    def close(self) -> None:
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
