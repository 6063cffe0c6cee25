"""End-to-end accounting: every record from the emulator's send log to silver, stage by stage, and who lost or
doubled what.

Who calls what: ``pinpipe accounting`` (:mod:`pinpipe.cli.accounting_cmd`) and ``pinpipe drill``
(:mod:`pinpipe.ops.drill`) call :func:`account`, which counts each stage (:mod:`pinpipe.checks.counts`) and
:func:`reconcile` s the counts. :meth:`AccountingReport.check` raises :class:`~pinpipe.errors.AccountingError`
(exit code 3) naming the first stage at fault.

Stages and their invariants, per topic (``<prefix>.<kind>`` and ``streaming-<prefix>-<kind>``):

1. **emulator → API** (send log). ``sent = acknowledged + rejected + unresolved``. A request answered 2xx is
   *acknowledged*: its records are durable. A final 4xx (other than 408/429) *rejected* it: nothing was appended.
   Anything else (timeouts, 5xx until the attempts ran out, an emulator stopped mid-request) is *unresolved*: the
   records may or may not be in the log. The API must never hand out one log position twice (**api**, doubled).
2. **API → log**. Every acknowledged record must be in the log at the ``(partition, offset)`` the API returned,
   with the same key (``ind``); a missing one is **log** lost. A retry after a lost answer may append a record
   again, so ``acknowledged ≤ in log`` is fine, but the log may not hold more records than were ever *attempted*
   (records × attempts, over every request): more is **log** doubled. "In log" is read to the end of each
   partition, never taken from broker watermarks. A record an operator skipped as corrupt (``pinpipe log
   repair``) is accounted for: reported as **log** skipped (not a failure), never as lost.
3. **log → landed** (sink). Per partition, the lines of the landed objects, in start-offset order, must be the
   log's records in offset order, byte for byte, from offset 0 up to how far the sink got — the later of its
   committed position and the end of its last object. A log record missing there is **sink** lost; a landed line
   that the log does not have there (a duplicated object, an overlap, a foreign line) is **sink** doubled. Log
   records beyond that point are not landed *yet*: **sink** behind.
4. **landed → batch** (``<lake>/_meta/runs`` and silver's ``pinpipe-batch:<topic>:<partition>`` transactions).
   The runs' ``read`` summed over every run must equal the landed records below the committed transaction
   versions: more is **batch** doubled, fewer is **batch** unrecorded (records processed by a run that did not
   record itself — a run killed after its commit — or not processed at all). Landed records beyond the versions
   are **batch** behind. Each run balances ``read = inserted + updated + collapsed + quarantined`` by itself.
5. **silver, from the data itself**. The records a writer has processed (landed records below the batch
   versions; log records below the ``pinpipe-stream:*`` versions when the log is given) that are not in
   quarantine are the *valid* records. Silver must hold exactly one row per distinct ``ind`` among them: an
   ``ind`` missing from silver, or a processed record neither valid nor quarantined, is lost; an ``ind`` twice,
   or an ``ind`` no valid record carries, is doubled; quarantine may hold each ``(topic, partition, offset)`` once
   and only for processed records. Without stream writers, ``Σ inserted`` must equal silver's rows and
   ``Σ quarantined`` quarantine's. The stage is **batch** (or **stream** for a lake only the stream job writes).

**Retired records** (the embedded log's retention deleted them, :mod:`pinpipe.log.retired`): every offset below a
partition's log start is *retired* — accounted for from the counts its retired manifest recorded, never lost.
Stage 2 counts them as in the log (an acknowledged record at a retired offset is held; ``in log + retired`` may
not exceed what was attempted); stage 3 checks the landed lines below the log start against each retired
segment's record count (fewer is **sink** lost — retired before the sink landed them, which only an expired group
allows; more is **sink** doubled); stage 5, for stream-written partitions whose retired records no landed object
covers, requires each retired record without a usable key to be in quarantine, and no longer calls a silver row
doubled for lack of a record carrying its ``ind`` (the retired ones may).

**Expired objects** (landing expiry deleted them, :mod:`pinpipe.lake.expiry`): their manifests keep each one's
offsets, line count and each line's key, so they still count as landed (``landed = present + expired``). Stage 3
checks, per partition, that the log's records below the expiry boundary number the expired lines there (counts,
as for retired records: the bytes are gone); stages 4–5 use their keys as if the lines were there. An expired line
at or beyond the batch's committed position is **batch** lost (expiry must never delete what the batch has not
committed).

Without a send log stages 1–2 only count; without ``--log`` the sink stage checks that every acknowledged record
is on its landed line (or, with no send log either, only counts lines). A lake with no landed objects and no
batch runs is a stream lake: stages 3–4 are skipped. "Behind" findings fail unless ``allow_lag`` (a live
pipeline is always a little behind; after quiescence nothing may be).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pinpipe.checks.counts import (
    LakeTally,
    LandedObject,
    PartitionLog,
    TopicSends,
    key_of_line,
    landed_offsets,
    tally_lake,
    tally_log,
    tally_sends,
)
from pinpipe.checks.findings import (
    STAGES,
    AccountingReport,
    Adder,
    Finding,
    KindRow,
    Problem,
    Stage,
    TopicRow,
)
from pinpipe.checks.retired import covered, expired_keys, unkeyed_not_quarantined
from pinpipe.checks.sink_stage import check_acked_landed, check_sink
from pinpipe.lake.expiry_manifest import ExpiredObject
from pinpipe.lake.store import Lake
from pinpipe.log.base import EventLog, TopicPartition
from pinpipe.log.retired import Retired, RetiresRecords
from pinpipe.tables import KINDS, Kind, kind_of_topic
from pinpipe.values import KEY_RANGE, parse_int

__all__ = ["STAGES", "AccountingReport", "Finding", "KindRow", "Problem", "Stage", "TopicRow", "account", "reconcile"]


def account(
    lake: Lake,
    prefix: str,
    *,
    event_log: EventLog | None = None,
    send_logs: Sequence[Path] = (),
    sink_group: str = "pinpipe-sink",
) -> AccountingReport:
    """Count every stage and reconcile (see the module docstring)."""
    sends = tally_sends(send_logs) if send_logs else None
    parts = tally_log(event_log, prefix, sink_group) if event_log is not None else None
    retired: dict[TopicPartition, Retired] = {}
    if parts is not None and isinstance(event_log, RetiresRecords):
        retired = {tp: r for tp in parts if (r := event_log.retired(*tp)).log_start}
    return reconcile(prefix, sends, parts, tally_lake(lake, prefix, parts or ()), retired)


def reconcile(
    prefix: str,
    sends: dict[str, TopicSends] | None,
    parts: dict[TopicPartition, PartitionLog] | None,
    lake: LakeTally,
    retired: dict[TopicPartition, Retired] | None = None,
) -> AccountingReport:
    """The report for the counted stages; pure (no I/O), so tests can feed it corrupted counts. ``retired``: the
    retired manifest of each partition whose log start is above 0."""
    retired = retired or {}
    topics = sorted(
        {t for t in (sends or {}) if kind_of_topic(prefix, t)}
        | {t for t, _ in parts or {}}
        | {t for t, _ in lake.landed}
        | {t for t, _ in lake.expired}
    )
    landing = bool(lake.landed) or bool(lake.expired) or any(k.run_count or k.batch_txns for k in lake.kinds.values())
    report = AccountingReport([], [])
    add = report.findings.append
    for topic in topics:
        kind = kind_of_topic(prefix, topic)
        assert kind is not None
        row = TopicRow(topic, kind)
        report.topics.append(row)
        mine = sorted(tp for tp in set(parts or {}) | set(lake.landed) | set(lake.expired) if tp[0] == topic)
        s = (sends or {}).get(topic)
        if s is not None:
            row.sent, row.acked, row.rejected, row.unresolved = s.sent, s.acked, s.rejected, s.unresolved
            twice = sum(c - 1 for c in Counter((p, o) for p, o, _ in s.positions).values() if c > 1)
            if twice:
                add(Finding("api", topic, "doubled", twice, f"api acknowledged {twice} log positions of {topic} twice"))
        if parts is not None:
            row.in_log = sum(len(parts[tp].offsets) for tp in mine if tp in parts)
            row.retired = sum(retired[tp].records for tp in mine if tp in retired)
            row.skipped = _report_skipped(topic, parts, mine, add)
            if s is not None:
                _check_log(topic, s, parts, row.in_log + row.retired + row.skipped, add, retired)
        objects = {tp: lake.landed.get(tp, []) for tp in mine}
        gone = {tp: lake.expired.get(tp, []) for tp in mine}
        row.expired = sum(o.records for objs in gone.values() for o in objs)
        row.landed = sum(len(o.hashes) for objs in objects.values() for o in objs) + row.expired
        if landing and parts is not None:
            row.not_landed = check_sink(topic, objects, gone, parts, add, retired)
        elif landing and s is not None:
            check_acked_landed(topic, kind, s, objects, gone, add)
        if landing:
            row.batch_done = _check_batch_progress(topic, objects, gone, lake.kinds[kind].batch_txns, add)
    for kind in KINDS:
        report.kinds.append(_check_kind(prefix, kind, lake, parts, landing, add, retired))
    return report


def _report_skipped(
    topic: str, parts: dict[TopicPartition, PartitionLog], mine: list[TopicPartition], add: Adder
) -> int:
    where = [f"partition {tp[1]} offset {o}" for tp in mine if tp in parts for o in sorted(parts[tp].skipped)]
    if where:
        listed = ", ".join(where[:10]) + (", …" if len(where) > 10 else "")
        what = f"log skipped {len(where)} corrupt records of {topic} by `pinpipe log repair` ({listed})"
        add(Finding("log", topic, "skipped", len(where), f"{what}; their content is lost, they are accounted for"))
    return len(where)


def _check_log(
    topic: str,
    s: TopicSends,
    parts: dict[TopicPartition, PartitionLog],
    in_log: int,
    add: Adder,
    retired: dict[TopicPartition, Retired],
) -> None:
    def start(partition: int) -> int:
        r = retired.get((topic, partition))
        return r.log_start if r is not None else 0

    missing = sum(
        1
        for partition, offset, ind in s.positions
        if offset >= start(partition) and not _holds(parts.get((topic, partition)), offset, ind)
    )
    lost = max(missing, s.acked - in_log) if len(s.positions) < s.acked else missing
    if lost:
        add(
            Finding(
                "log",
                topic,
                "lost",
                lost,
                f"log lost {lost} acknowledged records of {topic} (acknowledged {s.acked}, log holds {in_log}, "
                "retired and skipped records included)",
            )
        )
    if in_log > s.attempted:
        extra = in_log - s.attempted
        add(
            Finding(
                "log",
                topic,
                "doubled",
                extra,
                f"log holds {extra} records of {topic} more than were ever sent ({s.attempted} over every attempt)",
            )
        )


def _holds(part: PartitionLog | None, offset: int, ind: int) -> bool:
    """True if ``part`` has a record at ``offset`` keyed ``ind`` (or not keyed: then the position is enough)."""
    if part is None:
        return False
    if offset in part.skipped:
        return True  # skipped by an operator as corrupt: reported as skipped
    i = part.index_of(offset)
    if i >= len(part.offsets) or part.offsets[i] != offset:
        return False
    key = part.keys[i]
    return key is None or key == str(ind).encode()


def _check_batch_progress(
    topic: str,
    objects: dict[TopicPartition, list[LandedObject]],
    expired: dict[TopicPartition, list[ExpiredObject]],
    txns: dict[TopicPartition, int],
    add: Adder,
) -> int:
    done = behind = early = 0
    for tp, objs in objects.items():
        version = txns.get(tp, 0)
        offsets = landed_offsets(objs)
        n = sum(1 for o in offsets if o < version)
        gone = expired_keys(expired.get(tp, []))
        uncommitted = sum(1 for o in gone if o >= version)
        done, behind, early = done + n + len(gone) - uncommitted, behind + len(offsets) - n, early + uncommitted
    if early:
        what = f"landing expiry deleted {early} landed records of {topic} the batch had not committed"
        add(Finding("batch", topic, "lost", early, what))
    if behind:
        add(Finding("batch", topic, "behind", behind, f"batch has not processed {behind} landed records of {topic}"))
    return done


def _check_kind(
    prefix: str,
    kind: Kind,
    lake: LakeTally,
    parts: dict[TopicPartition, PartitionLog] | None,
    landing: bool,
    add: Adder,
    retired: dict[TopicPartition, Retired],
) -> KindRow:
    kl = lake.kinds[kind]
    row = KindRow(kind, silver_rows=len(kl.silver_inds), quarantine_rows=len(kl.quarantine_keys))
    if kl.run_count:
        row.read, row.inserted, row.updated = kl.runs["read"], kl.runs["inserted"], kl.runs["updated"]
        row.collapsed, row.quarantined = kl.runs["collapsed"], kl.runs["quarantined"]
    stage: Stage = "batch" if landing or not kl.stream_txns else "stream"
    quarantined = set(kl.quarantine_keys)
    processed: dict[tuple[str, int, int], int | None] = {}
    for tp in set(lake.landed) | set(lake.expired):
        objs = lake.landed.get(tp, [])
        if kind_of_topic(prefix, tp[0]) == kind:
            version = kl.batch_txns.get(tp, 0)
            for offset, line in landed_offsets(objs).items():
                if offset < version:
                    processed[(tp[0], tp[1], offset)] = key_of_line(kind, line)
            for offset, ind in expired_keys(lake.expired.get(tp, [])).items():
                if offset < version:
                    processed.setdefault((tp[0], tp[1], offset), ind)
    judged_all = not kl.stream_txns
    unkeyed_retired = 0
    for tp, version in kl.stream_txns.items():
        part = (parts or {}).get(tp)
        if part is None:
            judged_all = False
            continue
        gone = retired.get(tp)
        if gone is not None and not covered(processed, tp, gone.log_start):
            # processed by the stream, then retired, and no landed object covers them: only their counts are left
            judged_all = False
            unkeyed_retired += unkeyed_not_quarantined(gone, tp, version, quarantined)
        for offset, key in zip(part.offsets, part.keys, strict=True):
            if offset < version and (tp[0], tp[1], offset) not in processed:
                # the log key as validation and cleaning read it (a hostile key never crashes accounting)
                text = None if key is None else key.decode("utf-8", "replace")
                processed[(tp[0], tp[1], offset)] = None if text is None else parse_int(text, KEY_RANGE)
    valid = {k for pos, k in processed.items() if pos not in quarantined and k is not None}
    neither = sum(1 for pos, k in processed.items() if pos not in quarantined and k is None) + unkeyed_retired
    row.valid_inds = len(valid)
    silver = set(kl.silver_inds)
    twice = len(kl.silver_inds) - len(silver)
    q_twice = len(kl.quarantine_keys) - len(quarantined)
    missing = len(valid - silver) + neither
    if missing:
        add(
            Finding(
                stage,
                kind,
                "lost",
                missing,
                f"{stage} lost {missing} records of {kind}: silver has "
                f"{len(silver)} rows, the valid processed records carry {len(valid)} distinct inds",
            )
        )
    extra = twice + q_twice
    if judged_all:
        extra += len(silver - valid) + len(quarantined - set(processed))
    if extra:
        add(
            Finding(
                stage,
                kind,
                "doubled",
                extra,
                f"{stage} doubled {extra} records of {kind}: silver {len(silver)} "
                f"distinct of {len(kl.silver_inds)} rows vs {len(valid)} valid inds; quarantine "
                f"{len(quarantined)} distinct of {len(kl.quarantine_keys)} rows",
            )
        )
    if kl.run_count and not kl.stream_txns:
        done = len(processed)
        if row.read is not None and row.read != done:
            problem: Problem = "doubled" if row.read > done else "unrecorded"
            add(
                Finding(
                    "batch",
                    kind,
                    problem,
                    abs(row.read - done),
                    f"batch runs read {row.read} records of {kind}, "
                    f"but {done} landed records are below its committed positions",
                )
            )
        if row.inserted != len(kl.silver_inds) or row.quarantined != len(kl.quarantine_keys):
            add(
                Finding(
                    "batch",
                    kind,
                    "unrecorded",
                    abs((row.inserted or 0) - len(kl.silver_inds)),
                    f"batch runs inserted {row.inserted} and quarantined {row.quarantined} records of {kind}; "
                    f"the tables hold {len(kl.silver_inds)} and {len(kl.quarantine_keys)}",
                )
            )
    return row
