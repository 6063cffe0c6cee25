"""Accounting over retired records: the sink stage checks the landed lines below a partition's log start against
the counts its retired manifest recorded, and the stream stage the retired records without a usable key against
quarantine (:mod:`pinpipe.checks.retired`)."""

from __future__ import annotations

from pinpipe.checks.counts import LandedObject
from pinpipe.checks.retired import check_retired_landed, covered, split_at, unkeyed_not_quarantined
from pinpipe.log.retired import Retired, RetiredSegment


def _segment(base: int, end: int, unkeyed: int = 0, skipped: int = 0) -> RetiredSegment:
    records = end - base - skipped
    return RetiredSegment(base, end, records, 100, 0, 0, records - unkeyed, unkeyed, skipped)


def _object(start: int, n: int) -> LandedObject:
    lines = [b'{"ind":%d}' % (start + i) for i in range(n)]
    return LandedObject(f"k{start}", start, [hash(line) for line in lines], lines)


RETIRED = Retired(20, (_segment(0, 10), _segment(10, 20)))


def test_objects_are_cut_at_the_log_start() -> None:
    above, below = split_at([_object(0, 15), _object(15, 10)], 20)
    assert below == list(range(20))
    assert [(o.start, len(o.lines)) for o in above] == [(20, 5)]
    assert above[0].lines[0] == b'{"ind":20}'


def test_every_retired_record_on_one_landed_line_balances() -> None:
    assert check_retired_landed(list(range(20)), RETIRED, frozenset()) == (0, 0)


def test_a_retired_record_never_landed_is_missing_and_a_line_twice_is_extra() -> None:
    landed = [o for o in range(20) if o != 13] + [4]
    assert check_retired_landed(landed, RETIRED, frozenset()) == (1, 1)


def test_a_skipped_offset_is_not_expected_on_a_line() -> None:
    retired = Retired(20, (_segment(0, 10, skipped=1), _segment(10, 20)))
    landed = [o for o in range(20) if o != 7]
    assert check_retired_landed(landed, retired, frozenset({7})) == (0, 0)


def test_unkeyed_retired_records_must_be_in_quarantine() -> None:
    retired = Retired(20, (_segment(0, 10, unkeyed=2), _segment(10, 20, unkeyed=1)))
    quarantined = [("t", 0, 3), ("t", 0, 15), ("t", 1, 4)]  # the partition-1 row is not this partition's
    assert unkeyed_not_quarantined(retired, ("t", 0), 20, quarantined) == 1
    assert unkeyed_not_quarantined(retired, ("t", 0), 20, [*quarantined, ("t", 0, 16)]) == 0
    assert unkeyed_not_quarantined(retired, ("t", 0), 10, []) == 2  # the stream processed the first segment only


def test_retired_offsets_known_from_landed_objects_are_covered() -> None:
    assert covered([("t", 0, 5), ("t", 0, 25)], ("t", 0), 20)
    assert not covered([("t", 0, 25), ("t", 1, 5)], ("t", 0), 20)
