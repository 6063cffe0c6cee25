"""The API's fast record check accepts and rejects exactly as ``validate_raw`` does, with the same reasons, on
values as the API's JSON parser gives them (integers within ``JSON_INT_RANGE``, finite floats); and it remembers
nothing of a rejected record's unknown field names."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pinpipe.ingest import validate
from pinpipe.ingest.validate import _all_surely_valid, _surely_valid, check_record
from pinpipe.tables import KINDS, RAW_TABLES, Kind, validate_raw
from pinpipe.values import INT64_MAX, INT64_MIN, JSON_INT_RANGE

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=JSON_INT_RANGE[0], max_value=JSON_INT_RANGE[1]),
    st.integers(min_value=-5, max_value=50),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, JSON_INT_RANGE[1]]),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["12", "-3", "1.5", "0", " 7 ", "2020-08-28 03:52:47", "9" * 5000, "1e999", "NaN"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@st.composite
def records(draw: st.DrawFn) -> tuple[Kind, Any]:
    kind = draw(st.sampled_from(KINDS))
    names = list(RAW_TABLES[kind].column_names)
    keys = draw(st.lists(st.sampled_from([*names, "extra"]), unique=True, max_size=len(names) + 1))
    if draw(st.booleans()):
        keys = [RAW_TABLES[kind].key, *[k for k in keys if k != RAW_TABLES[kind].key]]
    value: Any = {k: draw(_SCALARS) for k in keys}
    if draw(st.integers(0, 20)) == 0:
        value = draw(_SCALARS)
    return kind, value


@given(records())
@settings(max_examples=400, deadline=None)
def test_same_verdict_as_validate_raw(case: tuple[Kind, Any]) -> None:
    kind, value = case
    assert check_record(kind, value) == validate_raw(kind, value)


@given(st.lists(records(), max_size=6))
@settings(max_examples=200, deadline=None)
def test_bulk_check_is_the_per_row_check(cases: list[tuple[Kind, Any]]) -> None:
    for kind in KINDS:
        rows = [value for k, value in cases if k == kind]
        assert _all_surely_valid(kind, rows) == all(_surely_valid(kind, row) for row in rows)


def test_typical_rows_pass() -> None:
    geo = {"ind": 1, "timestamp": "2020-08-28 03:52:47", "latitude": 1.5, "longitude": -2, "country": "X"}
    pin = {"index": 3, "downloaded": 1, "follower_count": "15.1k", "title": None}
    assert check_record("geo", geo) is None and check_record("pin", pin) is None
    assert check_record("pin", {**pin, "downloaded": 2}) == "bad_type:downloaded"


def test_rejected_shapes_are_not_remembered() -> None:
    validate._SHAPES.clear()
    for i in range(50):
        name = f"{i}-" + "x" * 10_000
        assert check_record("geo", {"ind": 1, name: 1}) == f"unknown_field:{name[:100]}…"
    assert not validate._SHAPES
    assert check_record("geo", {"ind": 1, "latitude": 1.5}) is None
    assert check_record("user", {"ind": 1, "age": INT64_MAX + 1}) == "bad_type:age"
    assert all(name in RAW_TABLES[kind].column_names for kind, names, _ in validate._SHAPES for name in names)
    assert len(validate._SHAPES) == 2
