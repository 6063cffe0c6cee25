"""The Kinesis event log (``kinesis://REGION[?endpoint=URL][&commits=DIR]``) over boto3.

Who calls what: as for every :class:`~pinpipe.log.base.EventLog`. A topic is a stream, a partition is a shard
(shards in ``ShardId`` order; partition ``p`` is the ``p``-th shard).

- **Placement**: each record goes to shard ``partition_for(key, shards)`` via ``ExplicitHashKey`` = that shard's
  starting hash key, so keyed records land where every other backend would put them. ``PartitionKey`` is the key.
- **Offsets**: Kinesis sequence numbers are sparse and huge; the port needs dense per-shard integers, so the
  offset of a record is its *ordinal* in the shard (0 for the oldest record still in the shard). Ordinals are
  found by counting records with ``GetRecords``: after a ``PutRecords`` the writer counts forward from the last
  record it counted to its own records (exact even with several writers); a reader asked for offset ``n`` starts
  from the nearest remembered checkpoint (one per 1,000 records, plus where it stopped) and counts forward.
  Costs and limits: a cold reader or ``end_offset`` counts the shard from its start (one ``GetRecords`` per
  10,000 records, and Kinesis allows 5 per second per shard, so about 50,000 records/s); every append costs at
  least one ``GetRecords`` per touched shard; and **ordinals shift when records expire** past the stream's
  retention period (24 h by default), so a consumer must keep up within retention (raise retention with
  ``IncreaseStreamRetentionPeriod`` for slow consumers). Resharding (split/merge) is not supported.
- **Commits**: Kinesis has no consumer offsets; positions are kept in a
  :class:`~pinpipe.log.commits.FileCommitStore` under ``commits=DIR`` (default ``pinpipe-data/kinesis-commits``),
  an atomically replaced JSON file per (group, stream). It is local to the machine: consumers of one group on
  several machines share partitions through DynamoDB leases instead (:mod:`pinpipe.log.leases`, `pinpipe stream --leases`).

botocore errors are mapped here, once: ``ResourceNotFoundException`` → UnknownTopicError; connection failures,
timeouts, throttling and other service errors → LogUnavailableError.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pinpipe import retry
from pinpipe.errors import (
    LogUnavailableError,
    MissingExtraError,
    UnknownTopicError,
    error_code,
    map_exceptions,
)
from pinpipe.log.base import Capabilities, EventLog, LogRecord, partition_for, split_url
from pinpipe.log.commits import FileCommitStore
from pinpipe.log.feed import StaticConsumer

_BATCH = 500
_BATCH_BYTES = 5 * 1024 * 1024
_CHECKPOINT_EVERY = 1000
_POLL_S = 0.2


try:  # the backend alone imports its SDK; a missing extra says what to install when the log is opened
    import boto3
    from botocore.config import Config
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise MissingExtraError("boto3", "kinesis") from exc

if TYPE_CHECKING:
    from mypy_boto3_kinesis.client import KinesisClient


class PartialPutError(LogUnavailableError):
    """Kinesis accepted some records of a PutRecords call and refused the rest (throttling): put those again."""


class _Shard:
    """What this process knows about one shard: checkpoints ``ordinal → sequence number`` and the write cursor."""

    def __init__(self, shard_id: str, start_hash: str) -> None:
        self.shard_id = shard_id
        self.start_hash = start_hash
        self.lock = threading.Lock()
        self.ordinals: list[int] = []  # sorted; record at ordinals[i] has sequence number seqs[i]
        self.seqs: list[str] = []
        self.counted: tuple[int, str] | None = None  # (ordinal, seq) of the last record the writer counted
        self.reader: tuple[int, str, str | None] | None = None  # (next ordinal, last seq, next iterator)

    def remember(self, ordinal: int, seq: str) -> None:
        i = bisect.bisect_left(self.ordinals, ordinal)
        if i == len(self.ordinals) or self.ordinals[i] != ordinal:
            self.ordinals.insert(i, ordinal)
            self.seqs.insert(i, seq)

    def before(self, ordinal: int) -> tuple[int, str] | None:
        """The latest checkpoint strictly before ``ordinal``."""
        i = bisect.bisect_left(self.ordinals, ordinal) - 1
        return (self.ordinals[i], self.seqs[i]) if i >= 0 else None


class KinesisLog(StaticConsumer, EventLog):
    capabilities = Capabilities(durable=True, shared=True, consumer_groups=False)
    min_read_interval_s = 0.2  # Kinesis allows 5 GetRecords per second per shard

    def __init__(self, region: str, endpoint: str | None = None, commits_dir: str | Path | None = None) -> None:
        self.url = f"kinesis://{region}" + (f"?endpoint={endpoint}" if endpoint else "")
        config = Config(retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=15)
        self._client: KinesisClient = boto3.client("kinesis", region_name=region, endpoint_url=endpoint, config=config)
        self._commits = FileCommitStore(Path(commits_dir or "pinpipe-data/kinesis-commits"))
        self._shards: dict[str, list[_Shard]] = {}
        self._lock = threading.Lock()
        self._rr = 0

    @classmethod
    def from_url(cls, url: str) -> KinesisLog:
        region, query = split_url(url, "kinesis", "region", "kinesis://us-east-1[?endpoint=URL&commits=DIR]")
        return cls(region, query.get("endpoint"), query.get("commits"))

    # ------------------------------------------------------------------------------------------ boundary

    def _call(self, what: str, stream: str | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        with map_exceptions("kinesis", f"Kinesis at {self.url} could not {what}", topic=stream):
            return fn(**kwargs)

    def _shard_list(self, stream: str) -> list[_Shard]:
        shards = self._shards.get(stream)
        if shards is None:
            found = self._call("list shards", stream, self._client.list_shards, StreamName=stream)["Shards"]
            shards = [
                _Shard(s["ShardId"], s["HashKeyRange"]["StartingHashKey"])
                for s in found
                if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
            ]
            shards.sort(key=lambda s: s.shard_id)
            with self._lock:
                shards = self._shards.setdefault(stream, shards)
        return shards

    def _shard(self, stream: str, partition: int) -> _Shard:
        shards = self._shard_list(stream)
        if not 0 <= partition < len(shards):
            raise UnknownTopicError(f"stream {stream!r} has no partition {partition}", topic=stream)
        return shards[partition]

    # ------------------------------------------------------------------------------------------ metadata

    def topics(self) -> dict[str, int]:
        names: list[str] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = self._call("list streams", None, self._client.list_streams, **kwargs)
            names.extend(page["StreamNames"])
            if not page.get("HasMoreStreams"):
                break
            kwargs = {"ExclusiveStartStreamName": names[-1]}
        return {name: len(self._shard_list(name)) for name in names}

    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        existing = set(self._call("list streams", None, self._client.list_streams)["StreamNames"])
        for stream in topics:
            if stream in existing:
                continue
            try:
                self._call(
                    "create a stream", stream, self._client.create_stream, StreamName=stream, ShardCount=partitions
                )
            except LogUnavailableError as exc:
                if error_code(exc.__cause__) != "ResourceInUseException":  # another writer created it meanwhile: fine
                    raise
        for stream in topics:
            deadline = time.monotonic() + 60
            while True:
                desc = self._call("describe stream", stream, self._client.describe_stream_summary, StreamName=stream)
                if desc["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                    break
                if time.monotonic() > deadline:
                    raise LogUnavailableError(f"stream {stream} did not become ACTIVE", backend="kinesis")
                time.sleep(0.1)

    # ------------------------------------------------------------------------------------------ writing

    def append(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        if not values:
            return []
        shards = self._shard_list(topic)
        entries: list[dict[str, Any]] = []
        placed: list[int] = []
        for i, value in enumerate(values):
            key = keys[i] if keys is not None else None
            with self._lock:
                self._rr += 1
                p = partition_for(key, len(shards), self._rr)
            placed.append(p)
            pkey = key.decode(errors="replace")[:256] if key else f"rr-{self._rr}"
            entries.append({"Data": bytes(value), "PartitionKey": pkey, "ExplicitHashKey": shards[p].start_hash})
        seqs = self._put(topic, entries)
        out: list[tuple[int, int]] = []
        wanted: dict[int, set[str]] = {}
        for p, seq in zip(placed, seqs, strict=True):
            wanted.setdefault(p, set()).add(seq)
        ordinals = {p: self._count_to(topic, shards[p], want) for p, want in wanted.items()}
        for p, seq in zip(placed, seqs, strict=True):
            out.append((p, ordinals[p][seq]))
        return out

    def _put(self, stream: str, entries: list[dict[str, Any]]) -> list[str]:
        """Put ``entries``, again for those Kinesis refused (a partial failure), under :data:`retry.PARTIAL_PUT`."""
        seqs: list[str] = [""] * len(entries)
        pending = list(range(len(entries)))
        for attempt in retry.attempts(retry.PARTIAL_PUT.but(on=PartialPutError)):  # not a Kinesis outage
            with attempt:
                pending = self._put_pending(stream, entries, pending, seqs)
                if pending:
                    raise PartialPutError(
                        f"Kinesis kept refusing {len(pending)} records of {stream}", backend="kinesis", topic=stream
                    )
        return seqs

    def _put_pending(
        self, stream: str, entries: list[dict[str, Any]], pending: list[int], seqs: list[str]
    ) -> list[int]:
        """One pass over ``pending`` in PutRecords-sized chunks; fills ``seqs``; returns the refused indexes."""
        failed: list[int] = []
        start = 0
        while start < len(pending):
            end, size = start, 0
            while end < len(pending) and end - start < _BATCH:
                e = entries[pending[end]]
                size += len(e["Data"]) + len(e["PartitionKey"])
                if size > _BATCH_BYTES and end > start:
                    break
                end += 1
            chunk = pending[start:end]
            resp = self._call(
                "put records",
                stream,
                self._client.put_records,
                StreamName=stream,
                Records=[entries[i] for i in chunk],
            )
            for i, result in zip(chunk, resp["Records"], strict=True):
                if "SequenceNumber" in result:
                    seqs[i] = result["SequenceNumber"]
                else:
                    failed.append(i)
            start = end
        return failed

    def _count_to(self, stream: str, shard: _Shard, wanted: set[str]) -> dict[str, int]:
        """Ordinals of the records ``wanted`` (sequence numbers), counting forward from the writer's cursor."""
        found: dict[str, int] = {}
        with shard.lock:
            ordinal, seq = shard.counted or (-1, None)
            deadline = time.monotonic() + 30
            for record in self._scan(stream, shard, seq):
                ordinal += 1
                rseq = record["SequenceNumber"]
                if ordinal % _CHECKPOINT_EVERY == 0:
                    shard.remember(ordinal, rseq)
                if rseq in wanted:
                    found[rseq] = ordinal
                    if len(found) == len(wanted):
                        break
                if time.monotonic() > deadline:
                    break
            if len(found) != len(wanted):
                raise LogUnavailableError(f"Kinesis did not show appended records of {stream}", backend="kinesis")
            last = max(found, key=int)
            shard.counted = (found[last], last)
            shard.remember(found[last], last)
        return found

    def _scan(self, stream: str, shard: _Shard, after: str | None, idle_stop: bool = False) -> Any:
        """Records of ``shard`` after sequence number ``after`` (from the start if None), in order."""
        kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard.shard_id}
        if after is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        iterator = self._call("get a shard iterator", stream, self._client.get_shard_iterator, **kwargs)[
            "ShardIterator"
        ]
        deadline = time.monotonic() + 30
        while iterator and time.monotonic() < deadline:
            resp = self._call("get records", stream, self._client.get_records, ShardIterator=iterator, Limit=10_000)
            yield from resp["Records"]
            iterator = resp.get("NextShardIterator")
            if not resp["Records"] and (idle_stop or resp.get("MillisBehindLatest", 0) == 0):
                if idle_stop:
                    return
                time.sleep(0.02)

    # ------------------------------------------------------------------------------------------ reading

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
    ) -> list[LogRecord]:
        shard = self._shard(topic, partition)
        deadline = time.monotonic() + timeout_s
        while True:
            with shard.lock:
                out = self._read_locked(topic, partition, shard, offset, max_records)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def _read_locked(self, stream: str, partition: int, shard: _Shard, offset: int, limit: int) -> list[LogRecord]:
        if shard.reader is not None and shard.reader[0] == offset:
            ordinal, last_seq = offset - 1, shard.reader[1]
        else:
            start = shard.before(offset)
            ordinal, last_seq = start if start is not None else (-1, "")
        out: list[LogRecord] = []
        for record in self._scan(stream, shard, last_seq or None, idle_stop=True):
            ordinal += 1
            seq = record["SequenceNumber"]
            last_seq = seq
            if ordinal % _CHECKPOINT_EVERY == 0:
                shard.remember(ordinal, seq)
            if ordinal >= offset:
                pkey = record.get("PartitionKey")
                ts = int(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
                key = None if pkey is None or pkey.startswith("rr-") else pkey.encode()
                out.append(LogRecord(stream, partition, ordinal, bytes(record["Data"]), key, ts))
                if len(out) >= limit:
                    break
        if last_seq and ordinal >= offset - 1:
            shard.reader = (ordinal + 1, last_seq, None)
            shard.remember(ordinal, last_seq)
        return out

    def end_offset(self, topic: str, partition: int) -> int:
        shard = self._shard(topic, partition)
        with shard.lock:
            start = shard.before(1 << 62)
            ordinal, last = start if start is not None else (-1, None)
            for record in self._scan(topic, shard, last, idle_stop=True):
                ordinal += 1
                last = record["SequenceNumber"]
            if last is not None:
                shard.remember(ordinal, last)
            return ordinal + 1

    def committed(self, group: str, topic: str) -> dict[int, int]:
        self._shard_list(topic)
        return self._commits.committed(group, topic)

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._shard_list(topic)
        self._commits.commit(group, topic, positions)
