"""Stage 3 of :mod:`pinpipe.checks.accounting`, log → landed (the sink): the landed lines of each partition
against the log's records, with the records the log retired and the objects landing expiry deleted accounted
from their manifests' counts (the module docstring of :mod:`pinpipe.checks.accounting` states the invariants).

Who calls what: :func:`pinpipe.checks.accounting.reconcile` calls :func:`check_sink` when the log was read, else
:func:`check_acked_landed` (every acknowledged record on its landed line) when a send log was given.
"""

from __future__ import annotations

from pinpipe.checks.counts import LandedObject, PartitionLog, TopicSends, key_of_line, sequence_diff
from pinpipe.checks.findings import Adder, Finding
from pinpipe.checks.retired import check_expired_landed, check_retired_landed, expired_keys, split_at
from pinpipe.lake.expiry_manifest import ExpiredObject
from pinpipe.log.base import TopicPartition
from pinpipe.log.retired import Retired
from pinpipe.tables import Kind


def check_sink(
    topic: str,
    objects: dict[TopicPartition, list[LandedObject]],
    expired: dict[TopicPartition, list[ExpiredObject]],
    parts: dict[TopicPartition, PartitionLog],
    add: Adder,
    retired: dict[TopicPartition, Retired],
) -> int:
    lost = doubled = behind = 0
    for tp, objs in objects.items():
        part = parts.get(tp) or PartitionLog()
        gone = [o for e in expired.get(tp, []) for o in range(e.start, e.end)]
        log_start = retired[tp].log_start if tp in retired else 0
        if tp in retired:
            objs, below = split_at(objs, log_start)
            missing, extra = check_retired_landed(below + [o for o in gone if o < log_start], retired[tp], part.skipped)
            lost, doubled = lost + missing, doubled + extra
        lo, missing, extra = check_expired_landed(expired.get(tp, []), part, log_start)
        lost, doubled = lost + missing, doubled + extra
        kept = [[h for i, h in enumerate(o.hashes) if o.start + i not in part.skipped] for o in objs]
        landed = [h for hashes in kept for h in hashes]
        reach = part.index_of(objs[-1].start) + len(kept[-1]) if objs else lo
        if part.committed is not None:
            reach = max(reach, part.index_of(part.committed))
        reach = max(lo, min(reach, len(part.offsets)))
        missing, extra = sequence_diff(part.hashes[lo:reach], landed)
        lost, doubled, behind = lost + missing, doubled + extra, behind + len(part.offsets) - reach
    if lost:
        what = "in the log, or retired from it, and not landed"
        add(Finding("sink", topic, "lost", lost, f"sink lost {lost} records of {topic} ({what})"))
    if doubled:
        add(
            Finding(
                "sink",
                topic,
                "doubled",
                doubled,
                f"sink doubled {doubled} records of {topic} (landed lines the log does not hold at their place)",
            )
        )
    if behind:
        add(Finding("sink", topic, "behind", behind, f"sink has not landed the last {behind} records of {topic} yet"))
    return behind


def check_acked_landed(
    topic: str,
    kind: Kind,
    s: TopicSends,
    objects: dict[TopicPartition, list[LandedObject]],
    expired: dict[TopicPartition, list[ExpiredObject]],
    add: Adder,
) -> None:
    lines: dict[tuple[int, int], bytes] = {}
    for (_, partition), objs in objects.items():
        for obj in objs:
            for i, line in enumerate(obj.lines):
                lines.setdefault((partition, obj.start + i), line)
    known = {(p, o): k for (_, p), objs in expired.items() for o, k in expired_keys(objs).items()}

    def key_at(p: int, o: int) -> int | None:
        return known[(p, o)] if (p, o) in known else key_of_line(kind, lines.get((p, o), b""))

    missing = sum(1 for p, o, ind in s.positions if key_at(p, o) != ind)
    if missing:
        add(
            Finding(
                "sink",
                topic,
                "lost",
                missing,
                f"{missing} acknowledged records of {topic} are not landed at their "
                "offset (the log was not read: pass --log to tell whether the log or the sink lost them)",
            )
        )
