"""Property tests of each cleaning rule (DuckDB engine) against plain-Python statements of the rule.

Each example is a whole list of generated values cleaned in one ``clean_records`` call (one row per value), so
many values are checked per engine call; after the first call the engine reuses the cleaning program's SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinpipe.clean import clean_records
from pinpipe.clean.records import RawRecord
from pinpipe.engine import DuckDBEngine, Engine

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with DuckDBEngine() as eng:
        yield eng


def _clean(engine: Engine, kind: Any, records: list[dict[str, Any]]) -> Any:
    raw = [RawRecord(f"t.{kind}", 0, i, orjson.dumps(r), "test") for i, r in enumerate(records)]
    return clean_records(engine, kind, raw)


def _followers(text: str) -> int | None:
    import re

    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKmMbB]?)", text)
    if not m:
        return None
    mult = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[m.group(2).lower()]
    value = int(Decimal(m.group(1)) * mult)
    return value if value < 2**63 else None


numbers = st.builds(
    lambda i, d, s: f"{i}{'.' + d if d else ''}{s}",
    st.integers(0, 10**12).map(str) | st.text("0123456789", min_size=1, max_size=25),
    st.text("0123456789", max_size=12),
    st.sampled_from(["", "k", "K", "m", "M", "b", "B"]),
)
garbage = st.text(max_size=8) | st.sampled_from(["12kk", "1,234", " 12k", "-5", "1.2.3k", "k12", "1.k", "12\n"])


@SETTINGS
@given(values=st.lists(numbers | garbage, min_size=1, max_size=60))
def test_follower_count(engine: Engine, values: list[str]) -> None:
    res = _clean(engine, "pin", [{"index": i, "follower_count": v} for i, v in enumerate(values)])
    got = res.silver.column("follower_count").to_pylist()
    blank = [not v.strip(" \t\n\r\f\v") or v == "User Info Error" for v in values]
    assert got == [None if b else _followers(v) for v, b in zip(values, blank, strict=True)]
    unparsed = sum(1 for v, b in zip(values, blank, strict=True) if not b and _followers(v) is None)
    assert res.stats.notes.get("follower_count_unparsed", 0) == unparsed


PLACEHOLDER_CASES = {
    "description": ["No description available Story format", "No description available", "Untitled"],
    "title": ["No Title Data Available"],
    "poster_name": ["User Info Error"],
    "tag_list": ["N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"],
    "image_src": ["Image src error."],
}


@SETTINGS
@given(
    column=st.sampled_from(sorted(PLACEHOLDER_CASES)),
    values=st.lists(
        st.text(max_size=6)
        | st.sampled_from([p for v in PLACEHOLDER_CASES.values() for p in v])
        | st.sampled_from([" ", "\t\n", "\x0b", "\u00a0"]),
        min_size=1,
        max_size=60,
    ),
)
def test_placeholders_and_blanks(engine: Engine, column: str, values: list[str]) -> None:
    res = _clean(engine, "pin", [{"index": i, column: v} for i, v in enumerate(values)])
    expected = [None if (v in PLACEHOLDER_CASES[column] or not v.strip(" \t\n\r\f\v")) else v for v in values]
    assert res.silver.column(column).to_pylist() == expected


@SETTINGS
@given(cases=st.lists(st.tuples(st.text(max_size=10), st.booleans()), min_size=1, max_size=60))
def test_save_location(engine: Engine, cases: list[tuple[str, bool]]) -> None:
    values = [("Local save in " if prefixed else "") + rest for rest, prefixed in cases]
    res = _clean(engine, "pin", [{"index": i, "save_location": v} for i, v in enumerate(values)])
    stripped = [rest if prefixed else v for (rest, prefixed), v in zip(cases, values, strict=True)]
    assert res.silver.column("save_location").to_pylist() == [s if s.strip(" \t\n\r\f\v") else None for s in stripped]


coords = st.one_of(st.none(), st.floats(-300, 300, allow_nan=False), st.integers(-200, 200))


@SETTINGS
@given(pairs=st.lists(st.tuples(coords, coords), min_size=1, max_size=60))
def test_coordinates(engine: Engine, pairs: list[tuple[Any, Any]]) -> None:
    rows = [
        {"ind": i, "timestamp": "2020-08-28 03:52:47", "latitude": la, "longitude": lo}
        for i, (la, lo) in enumerate(pairs)
    ]
    res = _clean(engine, "geo", rows)
    ok = [la is not None and lo is not None and -90 <= la <= 90 and -180 <= lo <= 180 for la, lo in pairs]
    assert res.silver.column("ind").to_pylist() == [i for i, good in enumerate(ok) if good]
    assert res.silver.column("coordinates").to_pylist() == [
        [float(la), float(lo)] for (la, lo), g in zip(pairs, ok, strict=True) if g
    ]
    assert res.quarantine.column("reason").to_pylist() == ["bad_coordinates"] * ok.count(False)


stamps = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


@SETTINGS
@given(
    values=st.lists(
        st.tuples(stamps, st.sampled_from([" ", "T"])).map(
            lambda p: p[0].strftime("%Y-%m-%d") + p[1] + p[0].strftime("%H:%M:%S")
        )
        | st.sampled_from(
            [
                "not-a-date",
                "2020-13-45 25:61:00",
                "2020:08:28 03:52:47",
                "2021-11-20",
                "2020-02-30 00:00:00",
                "2020-08-28 24:00:00",
                "2020-08-28 23:59:60",
                "0000-01-01 00:00:00",
                "2020-8-28 03:52:47",
                "2020-08-28 03:52:47\n",
                " 2020-08-28 03:52:47",
                "2020-08-28t03:52:47",
            ]
        ),
        min_size=1,
        max_size=60,
    )
)
def test_timestamps_both_wire_forms(engine: Engine, values: list[str]) -> None:
    rows = [{"ind": i, "first_name": "A", "last_name": "B", "age": 30, "date_joined": v} for i, v in enumerate(values)]
    res = _clean(engine, "user", rows)

    def parse(v: str) -> datetime | None:
        import re

        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}", v):
            return None
        try:
            return datetime.strptime(v.replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            return None

    expected = [parse(v) for v in values]
    assert res.silver.column("date_joined").to_pylist() == [e for e in expected if e is not None]
    assert res.quarantine.column("reason").to_pylist() == ["bad_timestamp:date_joined"] * expected.count(None)


names = st.one_of(st.none(), st.text(max_size=6), st.integers(0, 99))


@SETTINGS
@given(people=st.lists(st.tuples(names, names), min_size=1, max_size=60))
def test_user_name(engine: Engine, people: list[tuple[Any, Any]]) -> None:
    rows = [
        {"ind": i, "first_name": f, "last_name": la, "age": 20, "date_joined": "2016-01-01 00:00:00"}
        for i, (f, la) in enumerate(people)
    ]
    res = _clean(engine, "user", rows)
    assert res.silver.column("user_name").to_pylist() == [
        None if f is None or la is None else f"{f} {la}" for f, la in people
    ]


@SETTINGS
@given(sends=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=60))
def test_last_record_wins_and_conflicts_count_changes(engine: Engine, sends: list[tuple[int, str]]) -> None:
    res = _clean(engine, "pin", [{"index": ind, "title": title} for ind, title in sends])
    last: dict[int, str] = {}
    conflicts = 0
    for ind, title in sends:
        conflicts += ind in last and last[ind] != title
        last[ind] = title
    assert res.silver.column("ind").to_pylist() == sorted(last)
    assert res.silver.column("title").to_pylist() == [last[ind] for ind in sorted(last)]
    assert res.stats.conflicts == conflicts
    assert res.stats.duplicates == len(sends) - len(last) - conflicts
    firsts = {ind: title for ind, title in reversed(sends)}
    first_rows = res.first_rows().sort_by("ind")
    assert first_rows.column("title").to_pylist() == [firsts[ind] for ind in sorted(firsts)]


def test_last_record_wins_and_counts(engine: Engine) -> None:
    a = {"index": 7, "title": "a"}
    b = {"index": 7, "title": "b"}
    res = _clean(engine, "pin", [a, b, b, a, {"index": 8}, "[1]", {"index": 9, "x": 1}])  # type: ignore[list-item]
    assert res.silver.column("title").to_pylist() == ["a", None]
    assert (res.stats.duplicates, res.stats.conflicts, res.stats.quarantined) == (1, 2, 2)
    assert res.quarantine.column("reason").to_pylist() == ["not_an_object", "unknown_field:x"]


def test_invalid_json_and_bad_utf8(engine: Engine) -> None:
    raw = [
        RawRecord("t.geo", 0, 0, b'{"ind": 1, "timest', "k"),
        RawRecord("t.geo", 0, 1, b'{"ind": 2, "country": "\xff"}', "k"),
    ]
    res = clean_records(engine, "geo", raw)
    assert res.quarantine.column("reason").to_pylist() == ["invalid_json", "invalid_json"]
    assert res.quarantine.column("raw").to_pylist()[0] == '{"ind": 1, "timest'
