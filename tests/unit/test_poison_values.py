"""Poison values in-process: validation and cleaning never raise, and every record the API accepts ends in silver
or in quarantine — exactly where the oracle (:mod:`pinpipe.synth.oracle`, plain Python) puts it.

The records are JSON text (:mod:`tests.fixtures.hostile`): what the API would parse, and, for the cleaner, both
what the log would hold for an accepted record (its compact JSON) and hostile landed lines that never went through
the API (invalid JSON, bare ``NaN``, duplicated keys, numerals of 5,000 digits)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinpipe.clean import clean_records
from pinpipe.clean.quarantine import reason_code
from pinpipe.clean.records import RawRecord
from pinpipe.engine import DuckDBEngine, Engine
from pinpipe.ingest.validate import check_record, encode_valid
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, Kind, check_raw, key_of, validate_raw
from pinpipe.values import KEY_RANGE
from tests.fixtures.hostile import Hostile, hostile_records, known_poison

SEMANTIC = {"bad_timestamp", "bad_coordinates"}
"""The only reasons a record the API accepted may be quarantined for."""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with DuckDBEngine() as eng:
        yield eng


def _verdict(h: Hostile) -> tuple[bool, Any, str | None]:
    """(is JSON, the value, the API's reason) for one hostile record, checking that the API's two checks agree."""
    try:
        value = orjson.loads(h.text)
    except orjson.JSONDecodeError:
        return False, None, "invalid_json"
    reason = validate_raw(h.kind, value)
    assert check_record(h.kind, value) == reason, h.text[:200]
    assert check_raw(h.kind, value)[0] == reason
    if reason is None:
        assert 0 <= key_of(h.kind, value) <= KEY_RANGE[1]
    elif encode_valid(h.kind, [value], 1 << 21) is not None:
        raise AssertionError(f"the fast path accepts a record validate_raw refuses ({reason}): {h.text[:200]}")
    return True, value, reason


@given(st.lists(hostile_records(), max_size=40))
@settings(max_examples=150, deadline=None)
def test_the_api_check_never_raises_and_its_fast_path_agrees(records: list[Hostile]) -> None:
    for h in records:
        _verdict(h)
    for kind in KINDS:  # the whole-request fast path: surely valid only if every record is valid
        values = [v for ok, v, _ in map(_verdict, (h for h in records if h.kind == kind)) if ok]
        if encode_valid(kind, values, 1 << 21) is not None:
            assert all(validate_raw(kind, v) is None for v in values)


def test_keys_and_ints_have_one_range_at_the_api_and_in_the_cleaner(engine: Engine) -> None:
    cases: list[tuple[Kind, dict[str, Any], str | None]] = [
        ("user", {"ind": 2**63 - 1}, None),
        ("user", {"ind": 2**63}, "bad_key:ind"),
        ("user", {"ind": "1" * 40}, "bad_key:ind"),
        ("user", {"ind": "9" * 5000}, "bad_key:ind"),
        ("user", {"ind": "0" * 5000 + "12"}, None),
        ("user", {"ind": 1, "age": "9" * 5000}, "bad_type:age"),
        ("user", {"ind": 1, "age": 2**63}, "bad_type:age"),
        ("user", {"ind": 1, "age": -(2**63)}, None),
        ("geo", {"ind": 1, "latitude": "1e999"}, "bad_type:latitude"),
        ("geo", {"ind": 1, "latitude": "NaN"}, "bad_type:latitude"),
        ("geo", {"ind": 1, "longitude": "9" * 400}, "bad_type:longitude"),
        ("geo", {"ind": 1, "country": 2**64 - 1}, None),
        ("pin", {"index": 1, "x" * 5000: 1}, "unknown_field:" + "x" * 100 + "…"),
        ("pin", {"index": 1, "follower_count": "User Info Error"}, None),
    ]
    for kind, value, reason in cases:
        assert validate_raw(kind, value) == reason, (kind, str(value)[:80])
        assert check_record(kind, value) == reason
    for kind in KINDS:  # the cleaner quarantines the same lines for the same reasons
        mine = [(v, r) for k, v, r in cases if k == kind]
        records = [RawRecord(f"t.{kind}", 0, i, orjson.dumps(v), "test") for i, (v, _) in enumerate(mine)]
        res = clean_records(engine, kind, records)
        got = _reasons(res)
        for i, (_, reason) in enumerate(mine):
            if reason is not None:
                assert got.get(i) == reason, (kind, i)
            else:
                assert reason_code(got.get(i, "ok")) in SEMANTIC | {"ok"}, (kind, i, got.get(i))


def _reasons(res: Any) -> dict[int, str]:
    """Quarantine reasons of a CleanResult by offset."""
    q = res.quarantine
    return dict(zip(q.column("offset").to_pylist(), q.column("reason").to_pylist(), strict=True))


def _check_batch(engine: Engine, records: list[Hostile], *, as_landed_text: bool) -> None:
    """Clean ``records`` per kind and check them against the API's verdicts and the oracle."""
    for kind in KINDS:
        mine = [h for h in records if h.kind == kind]
        verdicts = [_verdict(h) for h in mine]
        if as_landed_text:  # hostile landed lines: any text at all
            lines = [h.text.encode() for h in mine]
        else:  # what the log holds: the compact JSON of each accepted record
            lines = [orjson.dumps(v) for ok, v, reason in verdicts if ok and reason is None]
        raw = [RawRecord(f"t.{kind}", 0, i, line, "test") for i, line in enumerate(lines)]
        res = clean_records(engine, kind, raw)
        s = res.stats
        assert s.read == len(raw) == s.valid + s.quarantined
        assert s.valid == res.silver.num_rows + s.duplicates + s.conflicts
        reasons = _reasons(res)
        if as_landed_text:
            for i, (_, _, reason) in enumerate(verdicts):
                if reason is not None:  # refused by the API ⇒ quarantined by the cleaner for the same reason
                    assert reasons.get(i) == reason, (mine[i].text[:200], reasons.get(i))
            continue
        assert {reason_code(r) for r in reasons.values()} <= SEMANTIC, reasons
        sent = [orjson.loads(line) for line in lines]
        expected = expected_output({kind: sent})
        assert res.silver.to_pylist() == expected.silver_table(kind).to_pylist(), kind
        assert sorted(reasons.values()) == sorted(q.reason for q in expected.quarantine[kind])
        assert sorted(reasons) == sorted(q.position for q in expected.quarantine[kind])


def test_known_poison_cleans_or_quarantines(engine: Engine) -> None:
    known = known_poison()
    _check_batch(engine, known, as_landed_text=False)
    _check_batch(engine, known, as_landed_text=True)


def test_lines_that_are_not_text_are_quarantined_as_invalid_json(engine: Engine) -> None:
    lines = [b"\xff\xfe{}", b'{"ind": 1, "country": "\xc3"}', b"\x00", b'{"ind": 2}\x00', b"", b"\n", b"\r\n"]
    res = clean_records(engine, "geo", [RawRecord("t.geo", 0, i, line, "test") for i, line in enumerate(lines)])
    assert res.stats.quarantined == len(lines) and res.silver.num_rows == 0
    assert set(_reasons(res).values()) == {"invalid_json"}


@given(st.lists(hostile_records(), min_size=1, max_size=60))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_accepted_records_end_in_silver_or_quarantine_as_the_oracle_says(
    engine: Engine, records: list[Hostile]
) -> None:
    _check_batch(engine, records, as_landed_text=False)


@given(st.lists(hostile_records(), min_size=1, max_size=60))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_landed_lines_never_halt_cleaning(engine: Engine, records: list[Hostile]) -> None:
    _check_batch(engine, records, as_landed_text=True)
