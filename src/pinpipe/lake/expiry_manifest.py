"""The expiry manifest: what landing expiry deleted, recorded in the lake before it deleted it.

Layout: one write-once JSON object per expiry step and topic-partition,
``_meta/landing_expired/<topic>/partition=<p>/<topic>+<p>+<first start:010d>.expired.json``, named after the
start offset of the first landed object it lists. It is written with :meth:`Lake.create
<pinpipe.lake.store.Lake.create>` (a hard link on ``file://``, a conditional ``If-None-Match: *`` put on S3), so it
is never read-modify-written: a manifest is either absent or whole, on every store, and two expiry passes racing
on one partition cannot both write the same one. A manifest lists objects the expiry *is about to* delete; a
crash after it was written and before the deletes leaves objects that are both present and listed, and the next
pass deletes them (:mod:`pinpipe.lake.expiry`) — readers count a listed object as expired whether or not it is
still there, never twice.

Each entry (:class:`ExpiredObject`) keeps what accounting needs once the object is gone: its key, start offset,
line count (``records``; its end offset is ``start + records``), bytes, SHA-256, the time the store last wrote it,
and the key (``ind``, or null when the line has none usable) of each line in offset order, so ``pinpipe
accounting`` reconciles the batch and silver stages exactly as if the lines were still there.

Who calls what: :func:`pinpipe.lake.expiry.expire` writes (:func:`write_manifest`); it and
:func:`pinpipe.checks.counts.tally_lake` read (:func:`read_expired`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import orjson

from pinpipe.errors import CommitConflictError, CorruptStateError
from pinpipe.lake.store import Lake

EXPIRED_PREFIX = "_meta/landing_expired/"
FORMAT = 1


@dataclass(frozen=True)
class ExpiredObject:
    """One landed object expiry deleted (or is deleting): see the module docstring."""

    key: str
    topic: str
    partition: int
    start: int
    records: int
    bytes: int
    sha256: str
    modified_ms: int
    keys: tuple[int | None, ...]

    @property
    def end(self) -> int:
        """The offset after its last line."""
        return self.start + self.records


@dataclass(frozen=True)
class ExpiryManifest:
    """One manifest object: objects of one topic-partition deleted by one expiry step, in offset order."""

    topic: str
    partition: int
    batch_position: int
    """The batch's committed position (application transaction) on this topic-partition when they were chosen."""
    expired_at_ms: int
    objects: tuple[ExpiredObject, ...]

    @property
    def key(self) -> str:
        return manifest_key(self.topic, self.partition, self.objects[0].start)

    def encode(self) -> bytes:
        doc = {
            "format": FORMAT,
            "topic": self.topic,
            "partition": self.partition,
            "batch_position": self.batch_position,
            "expired_at_ms": self.expired_at_ms,
            "objects": [
                {
                    "key": o.key,
                    "start": o.start,
                    "records": o.records,
                    "bytes": o.bytes,
                    "sha256": o.sha256,
                    "modified_ms": o.modified_ms,
                    "keys": list(o.keys),
                }
                for o in self.objects
            ],
        }
        return orjson.dumps(doc)


def manifest_key(topic: str, partition: int, first_start: int) -> str:
    return f"{EXPIRED_PREFIX}{topic}/partition={partition}/{topic}+{partition}+{first_start:010d}.expired.json"


def write_manifest(lake: Lake, manifest: ExpiryManifest) -> None:
    """Write ``manifest`` once, durably. The same bytes already there (a retried write) are accepted; other bytes
    mean another pass expired the same objects at the same time: :class:`CommitConflictError` (run again)."""
    data = manifest.encode()
    if lake.create(manifest.key, data) or lake.get(manifest.key) == data:
        return
    raise CommitConflictError(
        f"{manifest.key} was written by another expiry pass at the same time",
        hint="run one `pinpipe landing expire` (or batch with expiry) per lake at a time; run it again",
        key=manifest.key,
    )


def decode_manifest(key: str, data: bytes) -> ExpiryManifest:
    try:
        doc = orjson.loads(data)
        topic, partition = str(doc["topic"]), int(doc["partition"])
        objects = tuple(
            ExpiredObject(
                key=str(o["key"]),
                topic=topic,
                partition=partition,
                start=int(o["start"]),
                records=int(o["records"]),
                bytes=int(o["bytes"]),
                sha256=str(o["sha256"]),
                modified_ms=int(o["modified_ms"]),
                keys=tuple(None if k is None else int(k) for k in o["keys"]),
            )
            for o in doc["objects"]
        )
        manifest = ExpiryManifest(topic, partition, int(doc["batch_position"]), int(doc["expired_at_ms"]), objects)
        if int(doc["format"]) != FORMAT or not objects or any(len(o.keys) != o.records for o in objects):
            raise ValueError("unknown format, no objects, or a key count that is not the line count")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptStateError(
            f"{key} is not a landing expiry manifest ({exc})",
            hint="restore it from a backup or the store's versioning: it is the only record of what expiry deleted",
            key=key,
        ) from exc
    return manifest


def read_manifests(lake: Lake) -> list[ExpiryManifest]:
    """Every expiry manifest in the lake (none when expiry never ran)."""
    out: list[ExpiryManifest] = []
    for info in lake.iter(EXPIRED_PREFIX):
        if not info.key.endswith(".expired.json"):
            continue
        data = lake.get(info.key)
        if data is not None:
            out.append(decode_manifest(info.key, data))
    return out


def read_expired(lake: Lake) -> dict[tuple[str, int], list[ExpiredObject]]:
    """Per topic-partition, every object the manifests list, in offset order."""
    found: dict[tuple[str, int], list[ExpiredObject]] = defaultdict(list)
    for manifest in read_manifests(lake):
        found[(manifest.topic, manifest.partition)].extend(manifest.objects)
    for objects in found.values():
        objects.sort(key=lambda o: (o.start, o.key))
    return dict(found)
