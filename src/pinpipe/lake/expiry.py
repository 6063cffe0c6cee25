"""Landing expiry: delete landed objects that are old (or over a size bound) *and* that the batch has committed.

Who calls what: ``pinpipe landing expire`` (:mod:`pinpipe.cli.landing_cmd`) and, when a retention is set,
``pinpipe batch`` after its run call :func:`plan` then :func:`expire`; tests call :func:`select` directly.

The rule, per topic-partition of our topics (``<prefix>.<kind>``, ``streaming-<prefix>-<kind>``), walking its
landed objects from the oldest (lowest start offset):

1. an object is **due** when it is older than ``retention_ms`` (its store modification time, as an S3 lifecycle
   rule ages objects), or while the partition's landed bytes are over ``retention_bytes``;
2. it may go only when the batch has **committed past it**: the object that follows it starts at or before the
   batch's application-transaction position ``pinpipe-batch:<topic>:<partition>`` on ``silver/<kind>`` (so its
   end offset, ``start + lines``, is at or below that position — checked again on its bytes before deleting);
3. the **newest** object of a partition is never deleted: the sink resumes after the end of the partition's last
   landed object (:mod:`pinpipe.lake.sink`), so it must stay; the batch needs nothing below its position;
4. only a **prefix** is deleted: the walk stops at the first object that may not go, so what expiry removed is
   always everything below one offset per partition.

Crash safety: the objects of a step are read (line count, SHA-256, each line's key), recorded in a write-once
manifest (:mod:`pinpipe.lake.expiry_manifest`), and only then deleted, oldest first. A crash after the manifest
leaves listed objects in the lake; the next pass deletes them first (they are already accounted as expired). A
batch run at the same time never needs an expired object (it skips what is below its position), and the sink
never lists below its last object, so expiry may run while both run. Two expiry passes at once on one lake are
detected by the manifest's conditional write (:class:`~pinpipe.errors.CommitConflictError`), not prevented.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pinpipe.checks.counts import key_of_line, object_lines
from pinpipe.config import LandingSettings
from pinpipe.errors import CorruptStateError
from pinpipe.lake import delta
from pinpipe.lake.expiry_manifest import ExpiredObject, ExpiryManifest, read_expired, write_manifest
from pinpipe.lake.store import Lake, is_temporary_key, parse_landed_key
from pinpipe.tables import KINDS, Kind, batch_app_id, kind_of_topic
from pinpipe.telemetry.logs import get_logger

log = get_logger("expiry")

Reason = Literal["age", "size"]
MANIFEST_RECORDS = 200_000
"""Lines one manifest lists at most (a step reads, records and deletes this many before the next): memory stays
bounded whatever the backlog."""


@dataclass(frozen=True)
class ExpiryPolicy:
    """When a landed object is due (``-1``: that bound is off)."""

    retention_ms: int = -1
    retention_bytes: int = -1

    @classmethod
    def from_settings(cls, settings: LandingSettings) -> ExpiryPolicy:
        return cls(settings.retention_ms, settings.retention_bytes)

    @property
    def enabled(self) -> bool:
        return self.retention_ms >= 0 or self.retention_bytes >= 0


@dataclass(frozen=True)
class Landed:
    """A landed object as the listing shows it."""

    key: str
    start: int
    bytes: int
    modified_ms: int


@dataclass
class PartitionPlan:
    """One topic-partition: what is due and may go now, and why the rest stays."""

    topic: str
    partition: int
    position: int | None
    """The batch's committed position (None: the batch never committed here)."""
    present: list[Landed]
    due: list[tuple[Landed, Reason]] = field(default_factory=list)
    held: str | None = None
    """Why the first due object that stays, stays (``uncommitted`` or ``newest``); None if none due stays."""
    leftover: list[str] = field(default_factory=list)
    """Objects a manifest lists that are still there (a pass that crashed before its deletes)."""

    @property
    def end(self) -> int | None:
        """The offset below which everything due is (the start of the object after the last due one)."""
        if not self.due:
            return None
        i = self.present.index(self.due[-1][0])
        return self.present[i + 1].start


@dataclass
class ExpiryResult:
    dry_run: bool
    plans: list[PartitionPlan]
    expired: list[ExpiredObject] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    """Keys of objects an earlier, interrupted pass had recorded and this one deleted."""


def select(
    objects: Sequence[Landed], position: int | None, policy: ExpiryPolicy, now_ms: int
) -> tuple[list[tuple[Landed, Reason]], str | None]:
    """The due objects of one partition that may go, oldest first, and why the first due one that stays, stays
    (the module docstring's rule; pure). ``objects`` are the partition's landed objects in start-offset order."""
    chosen: list[tuple[Landed, Reason]] = []
    kept_bytes = sum(o.bytes for o in objects)
    for i, obj in enumerate(objects):
        reason: Reason | None = None
        if policy.retention_ms >= 0 and now_ms - obj.modified_ms >= policy.retention_ms:
            reason = "age"
        elif 0 <= policy.retention_bytes < kept_bytes:
            reason = "size"
        if reason is None:
            return chosen, None
        if i == len(objects) - 1:
            return chosen, "newest"
        if position is None or objects[i + 1].start > position:
            return chosen, "uncommitted"
        chosen.append((obj, reason))
        kept_bytes -= obj.bytes
    return chosen, None


def _listing(lake: Lake, prefix: str) -> dict[tuple[str, int], list[Landed]]:
    found: dict[tuple[str, int], list[Landed]] = defaultdict(list)
    for info in lake.iter("topics/"):
        parsed = None if is_temporary_key(info.key) else parse_landed_key(info.key)
        if parsed is None or kind_of_topic(prefix, parsed[0]) is None:
            continue
        topic, partition, start = parsed
        if f"topics/{topic}/partition={partition}/" not in info.key:
            continue
        modified = int(info.modified.timestamp() * 1000) if info.modified else int(time.time() * 1000)
        found[(topic, partition)].append(Landed(info.key, start, info.size, modified))
    for objects in found.values():
        objects.sort(key=lambda o: (o.start, o.key))
    return dict(found)


def _positions(lake: Lake, prefix: str, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    out: dict[tuple[str, int], int | None] = {}
    for kind in KINDS:
        mine = [tp for tp in tps if kind_of_topic(prefix, tp[0]) == kind]
        if mine:
            versions = delta.txn_versions(lake, kind, [batch_app_id(*tp) for tp in mine])
            out.update({tp: versions.get(batch_app_id(*tp)) for tp in mine})
    return out


def plan(lake: Lake, prefix: str, policy: ExpiryPolicy, now_ms: int | None = None) -> list[PartitionPlan]:
    """What a pass would do now: per topic-partition with landed objects, the due objects that may go."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    listing = _listing(lake, prefix)
    listed = {o.key for objs in read_expired(lake).values() for o in objs}
    positions = _positions(lake, prefix, sorted(listing))
    plans: list[PartitionPlan] = []
    for (topic, partition), objects in sorted(listing.items()):
        present = [o for o in objects if o.key not in listed]
        leftover = [o.key for o in objects[:-1] if o.key in listed]
        if objects[-1].key in listed:  # never happens through expiry alone: something else deleted what followed it
            log.warning(
                "the newest landed object of a partition is listed as expired; it stays, and so does the rest",
                extra={"fields": {"topic": topic, "partition": partition, "key": objects[-1].key}},
            )
            present, leftover = [], []
        p = PartitionPlan(topic, partition, positions.get((topic, partition)), present, leftover=leftover)
        if policy.enabled:
            p.due, p.held = select(present, p.position, policy, now_ms)
        plans.append(p)
    return plans


def expire(lake: Lake, prefix: str, plans: Sequence[PartitionPlan], now_ms: int | None = None) -> ExpiryResult:
    """Carry out ``plans`` (from :func:`plan`): finish what an interrupted pass recorded, then, per partition and
    step, read the due objects, write their manifest, and delete them."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = ExpiryResult(False, list(plans))
    for p in plans:
        for key in p.leftover:
            lake.delete(key)
            result.finished.append(key)
        if p.leftover:
            log.info("finished an interrupted expiry", extra={"fields": {"topic": p.topic, "objects": len(p.leftover)}})
        if not p.due or p.position is None:
            continue
        kind = kind_of_topic(prefix, p.topic)
        assert kind is not None
        for step in _steps(lake, p, p.position, kind):
            write_manifest(lake, ExpiryManifest(p.topic, p.partition, p.position, now_ms, tuple(step)))
            for obj in step:
                lake.delete(obj.key)
            result.expired.extend(step)
            log.info(
                "expired landed objects",
                extra={
                    "fields": {
                        "topic": p.topic,
                        "partition": p.partition,
                        "objects": len(step),
                        "records": sum(o.records for o in step),
                        "first_offset": step[0].start,
                        "end_offset": step[-1].end,
                    }
                },
            )
    return result


def _steps(lake: Lake, p: PartitionPlan, position: int, kind: Kind) -> Iterator[list[ExpiredObject]]:
    """The due objects read and described, cut into manifests of at most :data:`MANIFEST_RECORDS` lines."""
    step: list[ExpiredObject] = []
    lines = 0
    for obj, _ in p.due:
        data = lake.get(obj.key)
        if data is None:
            raise CorruptStateError(
                f"landed object {obj.key} vanished while landing expiry was recording it (nothing records it)",
                hint="something else deletes landed objects in this lake (a lifecycle rule?); let only "
                "`pinpipe landing expire` delete them, and check `pinpipe accounting`",
                key=obj.key,
            )
        records = object_lines(data)
        if obj.start + len(records) > position:  # the following object's start said otherwise: keep it
            break
        keys = tuple(key_of_line(kind, line) for line in records)
        sha = hashlib.sha256(data).hexdigest()
        step.append(
            ExpiredObject(obj.key, p.topic, p.partition, obj.start, len(records), len(data), sha, obj.modified_ms, keys)
        )
        lines += len(records)
        if lines >= MANIFEST_RECORDS:
            yield step
            step, lines = [], 0
    if step:
        yield step
