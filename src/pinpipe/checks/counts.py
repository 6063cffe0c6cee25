"""What each stage of the pipeline holds, counted from its own records: the inputs of :mod:`pinpipe.checks.accounting`.

Who calls what: :func:`pinpipe.checks.accounting.reconcile` (through ``pinpipe accounting`` and ``pinpipe drill``) calls
:func:`tally_sends`, :func:`tally_log` and :func:`tally_lake`; nothing here judges — it only counts and keeps
enough of each record (a hash of its bytes, its key) to match records across stages.

- **sends** — the emulator's send log(s) (:mod:`pinpipe.emulate.emulator` documents the format): per topic, records in
  requests, records over every attempt, acknowledged records with their ``(partition, offset, ind)``, rejected
  records.
- **log** — every record of every partition, read from offset 0 up to :meth:`EventLog.end_offset` (never the
  broker's watermarks: the Kafka backend finds the true end by reading to EOF because Tansu under-reports it),
  plus the sink group's committed positions and the offsets an operator skipped as corrupt (``pinpipe log
  repair``: accounted for as skipped, never as lost).
- **lake** — landed objects (lines, their offsets and keys), the objects landing expiry deleted (from their
  manifests, :mod:`pinpipe.lake.expiry_manifest`: counts and each line's key; a listed object still present — an
  interrupted pass — counts as expired only), the batch run log ``_meta/runs``, the batch and stream
  application-transaction versions on silver, silver ``ind`` values and quarantine keys.

Two matching helpers serve the reconciliation: :func:`sequence_diff` (records missing from / extra in a
sequence of record hashes) and :func:`landed_offsets` (a partition's landed line per offset).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow.compute as pc

from pinpipe.emulate.client import RETRY_STATUSES
from pinpipe.errors import InvalidInputError
from pinpipe.lake import delta
from pinpipe.lake.expiry_manifest import ExpiredObject, read_expired
from pinpipe.lake.runs import RUNS_TABLE
from pinpipe.lake.sink import encode_batch
from pinpipe.lake.store import Lake, parse_landed_key
from pinpipe.log.base import EventLog, TopicPartition
from pinpipe.tables import KINDS, RAW_TABLES, Kind, batch_app_id, kind_of_topic, stream_app_id
from pinpipe.values import KEY_RANGE, parse_int

READ_CHUNK = 5_000


def object_lines(data: bytes) -> list[bytes]:
    """The lines of a landed object, as bytes (a final newline ends the last line, it does not start one)."""
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def record_hash(value: bytes) -> int:
    """Identity of a record's bytes as a landed line would hold them (the sink makes multi-line JSON one line)."""
    if b"\n" in value or b"\r" in value:
        value = encode_batch([value])[:-1]
    return hash(value)


def key_of_line(kind: Kind, line: bytes | str) -> int | None:
    """The integer key (``index`` for pin, ``ind`` otherwise) of a JSON line, None if it has no usable key."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    value = doc.get(RAW_TABLES[kind].key) if isinstance(doc, dict) else None
    return parse_int(value, KEY_RANGE)  # the key exactly as validation and cleaning read it


# ---------------------------------------------------------------------------------------------- sends


@dataclass
class TopicSends:
    """What the emulator sent to one topic and what the API answered."""

    requests: int = 0
    sent: int = 0
    """Records in requests (each request counted once, however many attempts it took)."""
    attempted: int = 0
    """Records over every attempt: the most the log may hold for this topic (retries may append twice)."""
    acked: int = 0
    rejected: int = 0
    """Records of requests answered with a final 4xx: never appended."""
    positions: list[tuple[int, int, int]] = field(default_factory=list)
    """``(partition, offset, ind)`` of each acknowledged record whose position the API reported."""

    @property
    def unresolved(self) -> int:
        """Records whose request got no final answer (timeouts, 5xx to the end): they may or may not be in the log."""
        return self.sent - self.acked - self.rejected


def tally_sends(paths: Iterable[Path]) -> dict[str, TopicSends]:
    """Per topic, the sends recorded in the emulator's send log(s); InvalidInputError for an unreadable file."""
    requests: dict[str, dict[str, object]] = {}
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise InvalidInputError(f"cannot read the send log {path}: {exc}", hint="check --send-log") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                rid = f"{path}:{event['request_id']}"
                kind_topic = str(event["topic"])
                name = str(event["event"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                if number == len(lines):
                    continue  # a torn last line: the emulator was stopped mid-write
                raise InvalidInputError(
                    f"{path}:{number} is not a send-log event",
                    hint="pass files written by `pinpipe emulate --send-log`",
                ) from exc
            req = requests.setdefault(
                rid, {"topic": kind_topic, "inds": [], "attempts": 0, "acked": None, "final": None}
            )
            if name == "sent":
                req["inds"] = list(event.get("inds", []))
                req["attempts"] = int(str(req["attempts"])) + 1
            elif name == "acked":
                req["acked"] = event.get("records", [])
            elif name == "error" and event.get("final"):
                req["final"] = event.get("status")
    out: dict[str, TopicSends] = defaultdict(TopicSends)
    for req in requests.values():
        sends = out[str(req["topic"])]
        inds = req["inds"] if isinstance(req["inds"], list) else []
        sends.requests += 1
        sends.sent += len(inds)
        sends.attempted += len(inds) * int(str(req["attempts"]))
        acked = req["acked"]
        if isinstance(acked, list):
            sends.acked += len(inds)
            for rec in acked:
                if isinstance(rec, dict) and rec.get("partition") is not None and rec.get("offset") is not None:
                    sends.positions.append((int(rec["partition"]), int(rec["offset"]), int(rec["ind"])))
        elif isinstance(req["final"], int) and req["final"] not in RETRY_STATUSES:
            sends.rejected += len(inds)
    return dict(out)


# ---------------------------------------------------------------------------------------------- log


@dataclass
class PartitionLog:
    """Every record of one log partition, in offset order: offsets, byte hashes and keys."""

    offsets: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    committed: int | None = None
    """The sink group's committed position (next offset to land), None if it never committed."""
    skipped: frozenset[int] = frozenset()
    """Offsets skipped as corrupt by ``pinpipe log repair`` (the log serves no record there)."""

    def index_of(self, offset: int) -> int:
        """Position in this list of the first record at or after ``offset``."""
        from bisect import bisect_left

        return bisect_left(self.offsets, offset)


def tally_log(event_log: EventLog, prefix: str, sink_group: str) -> dict[TopicPartition, PartitionLog]:
    """Read every partition of our topics to its end (see the module docstring)."""
    out: dict[TopicPartition, PartitionLog] = {}
    skipped = event_log.skipped_records()
    for topic, partitions in sorted(event_log.topics().items()):
        if kind_of_topic(prefix, topic) is None:
            continue
        committed = event_log.committed(sink_group, topic)
        for partition in range(partitions):
            part = PartitionLog(committed=committed.get(partition))
            end = event_log.end_offset(topic, partition)
            part.skipped = frozenset(o for o in skipped.get((topic, partition), ()) if o < end)
            position = 0
            while position < end:
                records = event_log.read(topic, partition, position, READ_CHUNK, timeout_s=1.0)
                if not records:
                    break
                for rec in records:
                    part.offsets.append(rec.offset)
                    part.hashes.append(record_hash(rec.value))
                    part.keys.append(rec.key)
                position = records[-1].offset + 1
            out[(topic, partition)] = part
    return out


# ---------------------------------------------------------------------------------------------- lake


@dataclass
class LandedObject:
    key: str
    start: int
    hashes: list[int]
    lines: list[bytes]


@dataclass
class KindLake:
    """What the lake holds for one kind: batch runs (summed), silver inds, quarantine keys, writer progress."""

    runs: dict[str, int] = field(default_factory=dict)
    run_count: int = 0
    silver_inds: list[int] = field(default_factory=list)
    silver_exists: bool = False
    quarantine_keys: list[tuple[str, int, int]] = field(default_factory=list)
    batch_txns: dict[TopicPartition, int] = field(default_factory=dict)
    stream_txns: dict[TopicPartition, int] = field(default_factory=dict)


RUN_COLUMNS = ("read", "inserted", "updated", "collapsed", "quarantined")


@dataclass
class LakeTally:
    landed: dict[TopicPartition, list[LandedObject]]
    kinds: dict[Kind, KindLake]
    expired: dict[TopicPartition, list[ExpiredObject]] = field(default_factory=dict)
    """Objects landing expiry deleted, per topic-partition in offset order (not in ``landed``)."""


def tally_lake(lake: Lake, prefix: str, partitions: Iterable[TopicPartition] = ()) -> LakeTally:
    """Landed objects of our topics (present and expired), the batch run log and the silver/quarantine tables of
    ``lake``."""
    expired = {tp: objs for tp, objs in read_expired(lake).items() if kind_of_topic(prefix, tp[0]) is not None}
    listed = {o.key for objs in expired.values() for o in objs}
    landed: dict[TopicPartition, list[LandedObject]] = defaultdict(list)
    for info in lake.iter("topics/"):
        parsed = parse_landed_key(info.key)
        if parsed is None or kind_of_topic(prefix, parsed[0]) is None or info.key in listed:
            continue
        topic, partition, start = parsed
        if f"topics/{topic}/partition={partition}/" not in info.key:
            continue
        data = lake.get(info.key) or b""
        lines = object_lines(data)
        hashes = [hash(line) for line in lines]
        landed[(topic, partition)].append(LandedObject(info.key, start, hashes, lines))
    for objects in landed.values():
        objects.sort(key=lambda o: (o.start, o.key))
    tps = sorted(set(landed) | set(expired) | set(partitions))
    kinds = {kind: KindLake() for kind in KINDS}
    runs = delta.read_table(lake, *RUNS_TABLE)
    if runs is not None and runs.num_rows:
        for row in runs.filter(pc.equal(runs.column("path"), "batch")).to_pylist():
            kl = kinds.get(row["kind"])
            if kl is None:
                continue
            kl.run_count += 1
            for name in RUN_COLUMNS:
                kl.runs[name] = kl.runs.get(name, 0) + int(row[name])
    for kind, kl in kinds.items():
        mine = [tp for tp in tps if kind_of_topic(prefix, tp[0]) == kind]
        silver = delta.read_table(lake, "silver", kind, columns=["ind"])  # the keys only, not the rows
        if silver is not None:
            kl.silver_exists = True
            kl.silver_inds = [int(v) for v in silver.column("ind").to_pylist()]
            versions = delta.txn_versions(
                lake, kind, [batch_app_id(*tp) for tp in mine] + [stream_app_id(*tp) for tp in mine]
            )
            for tp in mine:
                if (v := versions.get(batch_app_id(*tp))) is not None:
                    kl.batch_txns[tp] = v
                if (v := versions.get(stream_app_id(*tp))) is not None:
                    kl.stream_txns[tp] = v
        quarantine = delta.read_table(lake, "quarantine", kind)
        if quarantine is not None:
            kl.quarantine_keys = list(
                zip(
                    quarantine.column("topic").to_pylist(),
                    quarantine.column("partition").to_pylist(),
                    quarantine.column("offset").to_pylist(),
                    strict=True,
                )
            )
    return LakeTally(dict(landed), kinds, expired)


# ---------------------------------------------------------------------------------------------- matching


def sequence_diff(expected: Sequence[int], actual: Sequence[int]) -> tuple[int, int]:
    """(missing, extra) between two sequences of record hashes."""
    if list(expected) == list(actual):
        return 0, 0
    lo = 0
    while lo < min(len(expected), len(actual)) and expected[lo] == actual[lo]:
        lo += 1
    hi = 0
    while hi < min(len(expected), len(actual)) - lo and expected[-1 - hi] == actual[-1 - hi]:
        hi += 1
    a, b = expected[lo : len(expected) - hi], actual[lo : len(actual) - hi]
    missing = extra = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("delete", "replace"):
            missing += i2 - i1
        if tag in ("insert", "replace"):
            extra += j2 - j1
    return missing, extra


def landed_offsets(objs: Iterable[LandedObject]) -> dict[int, bytes]:
    """Landed line per offset (``start + line number``, as the batch job numbers them); the first one wins."""
    out: dict[int, bytes] = {}
    for obj in objs:
        for i, line in enumerate(obj.lines):
            out.setdefault(obj.start + i, line)
    return out
