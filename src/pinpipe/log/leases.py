"""Partition leases in DynamoDB, as the Kinesis Client Library keeps them: stream workers on many machines share
a log that has no group coordinator (Kinesis; also ``file://`` on a shared disk) without a static split.

URL: ``dynamodb://TABLE[?region=REGION&endpoint=URL]`` (``pinpipe stream --leases URL``). The table is created on
first use (on-demand capacity, key ``lease``). One item per (topic, partition) of the kind topics:

=============  =====================================================================================
``lease``      ``<topic>:<partition>`` (the key)
``owner``      the worker holding it (``host:pid:random``)
``expires``    epoch seconds after which another worker may take it; the owner renews it every rescan
``checkpoint`` the next position the owner committed (informational: silver's Delta application
               transactions say where a worker resumes, see :mod:`pinpipe.stream.worker`)
``counter``    incremented at every take and renewal (a lease that moves can be seen moving)
=============  =====================================================================================

Each worker also keeps a ``worker:<owner>`` item with its own ``expires`` (a heartbeat), so workers that hold no
lease yet count as live.

Who calls what: :class:`LeaseFeed` is a :class:`~pinpipe.log.feed.LogFeed` whose partitions are the leases it
holds. On every rescan it renews its heartbeat and its leases, drops (after ``release``) any it failed to renew,
then balances: its fair share is ``ceil(partitions / live workers)``; holding more, it gives the excess up
(``release`` first, so its batch in flight commits); holding fewer, it takes free or expired leases. Every write is
conditional (``owner`` = me, or expired), so two workers never both believe they hold a lease. On close it
releases its leases (``expires`` = 0) so the others take them over at once; a worker killed with SIGKILL loses its
leases after ``lease_s`` (default 10 s).

Not done: clock skew between machines shortens or lengthens ``lease_s`` by that much (expiry uses the taker's
clock, as the original KCL's did before its lease counters).
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pinpipe.errors import ConfigError, LogUnavailableError, MissingExtraError, error_code, map_exceptions
from pinpipe.log.base import EventLog, TopicPartition, split_url
from pinpipe.log.feed import LogFeed
from pinpipe.telemetry.logs import get_logger

try:
    import boto3
    from botocore.config import Config
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise MissingExtraError("boto3", "kinesis") from exc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

log = get_logger("leases")

WORKER = "worker:"
"""Key prefix of the heartbeat items (lease keys are ``<topic>:<partition>``; topics never start with it)."""


@dataclass(frozen=True)
class Lease:
    key: str
    owner: str
    expires: float
    checkpoint: int
    counter: int

    @property
    def partition(self) -> TopicPartition:
        topic, _, partition = self.key.rpartition(":")
        return topic, int(partition)


def lease_key(tp: TopicPartition) -> str:
    return f"{tp[0]}:{tp[1]}"


class LeaseTable:
    """The lease items of one group in one DynamoDB table; every write is conditional on who holds the lease."""

    def __init__(self, table: str, region: str = "us-east-1", endpoint: str | None = None) -> None:
        self.table = table
        self.url = f"dynamodb://{table}?region={region}" + (f"&endpoint={endpoint}" if endpoint else "")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        config = Config(retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=10)
        self._db: DynamoDBClient = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint, config=config)

    @classmethod
    def from_url(cls, url: str) -> LeaseTable:
        table, query = split_url(url, "dynamodb", "table", "dynamodb://TABLE[?region=R&endpoint=URL]")
        return cls(table, query.get("region", "us-east-1"), query.get("endpoint"))

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        with map_exceptions("kinesis", f"DynamoDB lease table {self.table} could not {what}", table=self.table):
            return fn(**kwargs)

    def ensure(self) -> None:
        """Create the table if it does not exist, and wait until it is active."""
        try:
            self._call(
                "be created",
                self._db.create_table,
                TableName=self.table,
                KeySchema=[{"AttributeName": "lease", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "lease", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except LogUnavailableError as exc:
            if error_code(exc.__cause__) != "ResourceInUseException":  # another worker created it: fine
                raise
        deadline = time.monotonic() + 60
        while self._call("be described", self._db.describe_table, TableName=self.table)["Table"]["TableStatus"] != (
            "ACTIVE"
        ):
            if time.monotonic() > deadline:
                raise LogUnavailableError(f"DynamoDB table {self.table} did not become active in 60 s")
            time.sleep(0.2)

    def all(self) -> list[Lease]:
        leases: list[Lease] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self._call("be read", self._db.scan, **kwargs)
            leases.extend(_lease(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return leases
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _conditional(self, what: str, **kwargs: Any) -> bool:
        try:
            self._call(what, self._db.update_item, TableName=self.table, **kwargs)
            return True
        except LogUnavailableError as exc:
            if error_code(exc.__cause__) == "ConditionalCheckFailedException":
                return False
            raise

    def take(self, key: str, lease_s: float) -> bool:
        """Hold ``key`` if it is free, expired or already ours."""
        now = time.time()
        return self._conditional(
            "take a lease",
            Key={"lease": {"S": key}},
            UpdateExpression="SET #o = :me, expires = :exp ADD #c :one",
            ConditionExpression="attribute_not_exists(#o) OR #o = :me OR expires < :now",
            ExpressionAttributeNames={"#o": "owner", "#c": "counter"},
            ExpressionAttributeValues={
                ":me": {"S": self.owner},
                ":exp": {"N": repr(now + lease_s)},
                ":now": {"N": repr(now)},
                ":one": {"N": "1"},
            },
        )

    def renew(self, key: str, lease_s: float) -> bool:
        """Extend ``key`` if it is still ours."""
        return self._conditional(
            "renew a lease",
            Key={"lease": {"S": key}},
            UpdateExpression="SET expires = :exp ADD #c :one",
            ConditionExpression="#o = :me",
            ExpressionAttributeNames={"#o": "owner", "#c": "counter"},
            ExpressionAttributeValues={
                ":me": {"S": self.owner},
                ":exp": {"N": repr(time.time() + lease_s)},
                ":one": {"N": "1"},
            },
        )

    def heartbeat(self, lease_s: float) -> None:
        """Say this worker is alive for ``lease_s`` more seconds (counts it in everyone's fair share)."""
        self._call(
            "record a heartbeat",
            self._db.put_item,
            TableName=self.table,
            Item={
                "lease": {"S": f"{WORKER}{self.owner}"},
                "owner": {"S": self.owner},
                "expires": {"N": repr(time.time() + lease_s)},
            },
        )

    def leave(self) -> None:
        self._call(
            "remove a heartbeat",
            self._db.delete_item,
            TableName=self.table,
            Key={"lease": {"S": f"{WORKER}{self.owner}"}},
        )

    def checkpoint(self, key: str, position: int) -> bool:
        return self._conditional(
            "checkpoint a lease",
            Key={"lease": {"S": key}},
            UpdateExpression="SET #p = :pos",
            ConditionExpression="#o = :me",
            ExpressionAttributeNames={"#o": "owner", "#p": "checkpoint"},
            ExpressionAttributeValues={":me": {"S": self.owner}, ":pos": {"N": str(position)}},
        )

    def release(self, key: str) -> bool:
        """Give ``key`` up now (it expires at once), if it is still ours."""
        return self._conditional(
            "release a lease",
            Key={"lease": {"S": key}},
            UpdateExpression="SET expires = :zero",
            ConditionExpression="#o = :me",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":me": {"S": self.owner}, ":zero": {"N": "0"}},
        )


def _lease(item: Mapping[str, Any]) -> Lease:
    def number(name: str) -> float:
        return float(item.get(name, {}).get("N", "0"))

    return Lease(
        key=item["lease"]["S"],
        owner=item.get("owner", {}).get("S", ""),
        expires=number("expires"),
        checkpoint=int(number("checkpoint")),
        counter=int(number("counter")),
    )


class LeaseFeed(LogFeed):
    """A :class:`LogFeed` reading the partitions whose DynamoDB leases it holds (see the module docstring)."""

    def __init__(
        self,
        event_log: EventLog,
        prefix: str,
        group: str,
        leases: LeaseTable,
        *,
        lease_s: float = 10.0,
        owns_log: bool = False,
        min_read_interval_s: float = 0.0,
    ) -> None:
        super().__init__(
            event_log,
            prefix,
            group,
            rescan_s=max(lease_s / 5, 0.2),
            owns_log=owns_log,
            min_read_interval_s=min_read_interval_s,
        )
        if lease_s <= 0:
            raise ConfigError(f"lease time {lease_s} s must be positive")
        self.leases = leases
        self.lease_s = lease_s
        self._held: set[TopicPartition] = set()
        leases.ensure()

    def _mine(self, topics: Mapping[str, int]) -> list[TopicPartition]:
        candidates = super()._mine(topics)  # with one static "worker": every kind partition
        self.leases.heartbeat(self.lease_s)
        lost = [tp for tp in self._held if not self.leases.renew(lease_key(tp), self.lease_s)]
        if lost:
            self._drop(lost)
        now = time.time()
        items = self.leases.all()
        table = {lease.key: lease for lease in items if not lease.key.startswith(WORKER)}
        live = {lease.owner for lease in items if lease.key.startswith(WORKER) and lease.expires > now}
        share = math.ceil(len(candidates) / len(live | {self.leases.owner})) if candidates else 0
        excess: list[TopicPartition] = []
        if len(self._held) > share:  # a worker joined: give the excess up for it to take
            excess = sorted(self._held)[share:]
            self._drop(excess)
            for tp in excess:
                self.leases.release(lease_key(tp))
            log.info("leases given up for balance", extra={"fields": {"leases": ",".join(map(lease_key, excess))}})
        for tp in candidates:
            if len(self._held) >= share:
                break
            lease = table.get(lease_key(tp))
            free = lease is None or lease.expires <= now or lease.owner == self.leases.owner
            if tp not in self._held and tp not in excess and free and self.leases.take(lease_key(tp), self.lease_s):
                self._held.add(tp)
                log.info("lease taken", extra={"fields": {"lease": lease_key(tp), "owner": self.leases.owner}})
        return sorted(self._held)

    def _drop(self, lost: list[TopicPartition]) -> None:
        """Stop reading partitions (after letting the worker finish its batch in flight)."""
        log.info("leases dropped", extra={"fields": {"leases": ",".join(lease_key(tp) for tp in lost)}})
        if self._release is not None:
            self._release(lost)
        for tp in lost:
            self._held.discard(tp)
            self._positions.pop(tp, None)
        self._order = sorted(self._positions)

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        super().commit(positions)
        for tp, position in positions.items():
            if tp in self._held:
                self.leases.checkpoint(lease_key(tp), position)

    def close(self) -> None:
        held, self._held = sorted(self._held), set()
        super().close()  # lets the worker finish its batch first (release callback)
        for tp in held:
            self.leases.release(lease_key(tp))
        self.leases.leave()
