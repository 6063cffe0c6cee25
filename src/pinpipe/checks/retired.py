"""How :mod:`pinpipe.checks.accounting` reconciles records that are gone but recorded: those the embedded log's
retention deleted, from the counts each retired segment's entry in ``retired.json`` holds
(:mod:`pinpipe.log.retired`), and the landed objects landing expiry deleted, from their manifests
(:mod:`pinpipe.lake.expiry_manifest`).

Who calls what: :func:`pinpipe.checks.sink_stage.check_sink` calls :func:`split_at`, :func:`check_retired_landed`
and :func:`check_expired_landed`; :func:`pinpipe.checks.accounting.reconcile` calls :func:`expired_keys` for the
batch and silver stages, :func:`covered` and :func:`unkeyed_not_quarantined` for the stream's part of silver.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pinpipe.checks.counts import LandedObject, PartitionLog
from pinpipe.lake.expiry_manifest import ExpiredObject
from pinpipe.log.base import TopicPartition
from pinpipe.log.retired import Retired


def split_at(objs: list[LandedObject], start: int) -> tuple[list[LandedObject], list[int]]:
    """The landed objects cut to their lines at or after ``start``, and the offsets of the lines below it."""
    above: list[LandedObject] = []
    below: list[int] = []
    for o in objs:
        k = max(0, min(start - o.start, len(o.lines)))
        below.extend(o.start + i for i in range(k))
        if k < len(o.lines):
            above.append(LandedObject(o.key, o.start + k, o.hashes[k:], o.lines[k:]))
    return above, below


def check_retired_landed(below: list[int], retired: Retired, skipped: frozenset[int]) -> tuple[int, int]:
    """``(missing, extra)`` landed lines below the log start against the retired counts, segment by segment: a
    retired segment's readable records (and those found unreadable after every group read them) must each be on
    exactly one landed line at its offset."""
    counts = Counter(o for o in below if o not in skipped)
    missing = extra = 0
    seen = 0
    for seg in retired.segments:
        in_range = [n for o, n in counts.items() if seg.base <= o < seg.end]
        seen += sum(in_range)
        expected = seg.records + seg.unreadable
        missing += max(0, expected - len(in_range))
        extra += sum(n - 1 for n in in_range) + max(0, len(in_range) - expected)
    return missing, extra + sum(counts.values()) - seen  # a line outside every retired segment: not the log's


def covered(processed: Iterable[tuple[str, int, int]], tp: TopicPartition, start: int) -> bool:
    """True when some processed record of ``tp`` below ``start`` is known from a landed object (batch lakes keep
    what the log retired)."""
    return any((t, p) == tp and o < start for t, p, o in processed)


def unkeyed_not_quarantined(
    retired: Retired, tp: TopicPartition, version: int, quarantined: Iterable[tuple[str, int, int]]
) -> int:
    """Retired records below the stream's ``version`` that had no usable key, beyond the quarantine rows of their
    offsets: each such record should have been quarantined (it cannot be in silver), so the excess was lost."""
    end = min(version, retired.log_start)
    in_quarantine = sum(1 for t, p, o in quarantined if (t, p) == tp and o < end)
    unkeyed = sum(s.unkeyed for s in retired.segments if s.end <= version)
    return max(0, unkeyed - in_quarantine)


def expired_keys(expired: Iterable[ExpiredObject]) -> dict[int, int | None]:
    """Offset → key of each line of the expired objects (``start + line number``, as the batch numbers them)."""
    out: dict[int, int | None] = {}
    for obj in expired:
        for i, key in enumerate(obj.keys):
            out.setdefault(obj.start + i, key)
    return out


def check_expired_landed(expired: list[ExpiredObject], part: PartitionLog, log_start: int) -> tuple[int, int, int]:
    """``(boundary, missing, extra)`` for a partition's expired lines the log still serves (at or past
    ``log_start``): ``boundary`` is the index in ``part`` of the expiry boundary (the end of the last expired object;
    the present objects are compared with the log from there); the log's records below it must number the expired
    lines there — fewer lines are lost, more are doubled. Lines below ``log_start`` are checked against the retired
    counts instead (:func:`check_retired_landed`)."""
    if not expired:
        return 0, 0, 0
    boundary = part.index_of(max(o.end for o in expired))
    lines = sum(1 for o in expired for offset in range(o.start, o.end) if offset >= log_start)
    return boundary, max(0, boundary - lines), max(0, lines - boundary)
