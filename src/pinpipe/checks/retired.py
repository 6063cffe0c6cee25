"""How :mod:`pinpipe.checks.accounting` reconciles records the embedded log's retention deleted: from the counts
each retired segment's entry in ``retired.json`` holds (:mod:`pinpipe.log.retired`), since the records are gone.

Who calls what: :func:`pinpipe.checks.accounting.reconcile` calls :func:`split_at` and
:func:`check_retired_landed` for the sink stage, :func:`covered` and :func:`unkeyed_not_quarantined` for the
stream's part of the silver stage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pinpipe.checks.counts import LandedObject
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
