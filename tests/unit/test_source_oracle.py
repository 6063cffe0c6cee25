"""The oracle: SPEC §5 cleaning in plain Python, one row per key (last wins), quarantine reasons, accounting."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pinpipe.source.sample import load_sample_records
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import (
    PLACEHOLDERS,
    clean_record,
    expected_output,
    parse_follower_count,
    parse_timestamp,
    split_by_api,
)
from pinpipe.tables import KINDS, RAW_TABLES, SILVER_SCHEMAS

SUFFIX = {"": 1, "k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000, "b": 1_000_000_000, "B": 1_000_000_000}


def pin(**over: Any) -> dict[str, Any]:
    record = {
        "index": 7,
        "unique_id": "u-7",
        "title": "A title ",
        "description": "15.1k Likes, 83 Comments",
        "poster_name": "Bored Panda",
        "follower_count": "124k",
        "tag_list": "a,b",
        "is_image_or_video": "image",
        "image_src": "https://i.pinimg.com/x.jpg",
        "downloaded": 1,
        "save_location": "Local save in /data/art",
        "category": "art",
    }
    record.update(over)
    return record


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("124k", 124_000),
        ("1.5k", 1_500),
        ("15M", 15_000_000),
        ("2m", 2_000_000),
        ("3B", 3_000_000_000),
        ("305", 305),
        ("0", 0),
        (305, 305),
        ("1.2345k", 1_234),
        ("User Info Error", None),
        ("12kk", None),
        (" 12k", None),
        ("-5", None),
        ("1,234", None),
        ("", None),
        (None, None),
        ("99999999999B", None),
    ],
)
def test_follower_count_examples(raw: Any, expected: int | None) -> None:
    assert parse_follower_count(raw) == expected


@given(
    whole=st.integers(min_value=0, max_value=10**6),
    decimals=st.one_of(st.just(""), st.from_regex(r"[0-9]{1,3}", fullmatch=True)),
    suffix=st.sampled_from(sorted(SUFFIX)),
)
def test_follower_count_number_with_suffix(whole: int, decimals: str, suffix: str) -> None:
    text = f"{whole}.{decimals}{suffix}" if decimals else f"{whole}{suffix}"
    assert parse_follower_count(text) == int(Decimal(text.rstrip("kKmMbB")) * SUFFIX[suffix])


@given(st.text())
def test_follower_count_never_crashes_and_is_null_or_a_non_negative_int(text: str) -> None:
    value = parse_follower_count(text)
    assert value is None or (isinstance(value, int) and 0 <= value < 2**63)


@given(st.text(alphabet=st.characters(blacklist_characters="0123456789"), min_size=1))
def test_follower_count_without_digits_is_null(text: str) -> None:
    assert parse_follower_count(text) is None


def test_timestamps_in_both_wire_forms_only() -> None:
    moment = datetime(2020, 8, 28, 3, 52, 47, tzinfo=UTC)
    assert parse_timestamp("2020-08-28 03:52:47") == moment == parse_timestamp("2020-08-28T03:52:47")
    for bad in (
        "2020:08:28 03:52:47",
        "2021-11-20",
        "not-a-date",
        "2020-02-30 00:00:00",
        "2020-08-28 03:52:47.5",
        None,
        5,
    ):
        assert parse_timestamp(bad) is None


def test_pin_cleaning_rules() -> None:
    row = clean_record("pin", pin()).row
    assert row == {
        "ind": 7,
        "unique_id": "u-7",
        "title": "A title ",  # not trimmed
        "description": "15.1k Likes, 83 Comments",  # k only expanded in follower_count
        "follower_count": 124_000,
        "poster_name": "Bored Panda",
        "tag_list": "a,b",
        "is_image_or_video": "image",
        "image_src": "https://i.pinimg.com/x.jpg",
        "save_location": "/data/art",
        "category": "art",
    }
    assert list(row) == SILVER_SCHEMAS["pin"].names
    for column, placeholders in PLACEHOLDERS.items():
        for placeholder in placeholders:
            assert clean_record("pin", pin(**{column: placeholder})).row[column] is None  # type: ignore[index]
            other = "title" if column != "title" else "description"
            assert clean_record("pin", pin(**{other: placeholder})).row[other] == placeholder  # type: ignore[index]
    blank = clean_record("pin", pin(title=" \n", category="", unique_id="\t")).row
    assert blank is not None and blank["title"] is None and blank["category"] is None and blank["unique_id"] is None
    assert clean_record("pin", pin(title="\u00a0")).row["title"] == "\u00a0"  # type: ignore[index]  # NBSP is text
    assert clean_record("pin", pin(title=42)).row["title"] == "42"  # type: ignore[index]
    assert clean_record("pin", pin(index="12")).row["ind"] == 12  # type: ignore[index]
    garbage = clean_record("pin", pin(follower_count="12kk"))
    assert garbage.row is not None and garbage.row["follower_count"] is None and garbage.follower_count_unparsed
    assert not clean_record("pin", pin(follower_count="User Info Error")).follower_count_unparsed


def test_geo_and_user_cleaning_rules() -> None:
    geo = {
        "ind": 3,
        "timestamp": "2019-11-09T07:45:20",
        "latitude": "-84.8378",
        "longitude": -167.14,
        "country": "Aruba",
    }
    assert clean_record("geo", geo).row == {
        "ind": 3,
        "country": "Aruba",
        "coordinates": [-84.8378, -167.14],
        "timestamp": datetime(2019, 11, 9, 7, 45, 20, tzinfo=UTC),
    }
    assert clean_record("geo", {**geo, "latitude": 90.5}).reason == "bad_coordinates"
    assert clean_record("geo", {**geo, "longitude": None}).reason == "bad_coordinates"
    assert clean_record("geo", {**geo, "latitude": "north"}).reason == "bad_type:latitude"
    assert clean_record("geo", {**geo, "timestamp": "x", "latitude": 99}).reason == "bad_timestamp:timestamp"
    user = {"ind": 0, "first_name": "Adam", "last_name": "Acosta", "age": "20", "date_joined": "2015-10-21 21:26:45"}
    assert clean_record("user", user).row == {
        "ind": 0,
        "user_name": "Adam Acosta",
        "age": 20,
        "date_joined": datetime(2015, 10, 21, 21, 26, 45, tzinfo=UTC),
    }
    assert clean_record("user", {**user, "last_name": None}).row["user_name"] is None  # type: ignore[index]
    assert clean_record("user", {**user, "age": "twenty"}).reason == "bad_type:age"
    assert clean_record("user", {k: v for k, v in user.items() if k != "ind"}).reason == "missing_key:ind"
    assert clean_record("user", {**user, "extra": 1}).reason == "unknown_field:extra"
    assert clean_record("user", [user]).reason == "not_an_object"


def test_last_record_wins_and_accounting_balances() -> None:
    first, changed = pin(title="old"), pin(title="new")
    out = expected_output({"pin": [first, first, changed, pin(index=8), {"index": "x"}, changed]})
    assert [r["title"] for r in out.silver["pin"]] == ["new", "A title "]
    counts = out.accounting["pin"]
    assert (counts.read, counts.written, counts.duplicates, counts.conflicts, counts.quarantined) == (6, 2, 3, 1, 1)
    assert counts.balanced and counts.reasons == {"bad_key": 1}
    assert out.quarantine["pin"][0].position == 4 and out.quarantine["pin"][0].reason == "bad_key:index"
    assert out.silver["geo"] == [] and out.accounting["geo"].balanced


def test_sample_expected_output_and_arrow_tables() -> None:
    sent = {kind: load_sample_records(kind) for kind in KINDS}
    out = expected_output(sent)
    for kind in KINDS:
        assert out.accounting[kind].quarantined == 0 and out.accounting[kind].written == len(sent[kind])
        table = out.silver_table(kind)
        assert table.schema.equals(SILVER_SCHEMAS[kind]) and table.num_rows == len(sent[kind])
    pins = out.silver["pin"]
    assert sum(r["description"] is None for r in pins) == 175 + 40 + 1
    assert sum(r["follower_count"] is None for r in pins) == 16
    assert out.accounting["pin"].follower_count_unparsed == 0


def test_send_list_with_faults_and_resends_is_fully_accounted() -> None:
    sent = send_list(3000, seed=8, resend_rate=0.1, conflict_rate=0.05, faults=0.05, iso_rate=0.3).by_kind()
    out = expected_output(sent)
    for kind in KINDS:
        counts = out.accounting[kind]
        assert counts.balanced and counts.read == len(sent[kind])
        assert counts.quarantined > 0 and counts.duplicates > 0
        assert len(out.silver[kind]) == counts.written
    # a conflict needs a record sent again with another value: never more than the records sent twice or more;
    # each of the round(0.05 * 3000) conflicting re-sends changes one record (faults may add or hide some)
    for kind in KINDS:
        key = RAW_TABLES[kind].key
        distinct = len({repr(r.get(key)) if isinstance(r, dict) else repr(r) for r in sent[kind]})
        assert out.accounting[kind].conflicts <= len(sent[kind]) - distinct
    assert sum(out.accounting[k].conflicts for k in KINDS) >= round(0.05 * 3000) // 2
    accepted, rejected = split_by_api(sent)
    for kind in KINDS:
        assert len(accepted[kind]) + len(rejected[kind]) == 3450
        assert all(r.reason.split(":")[0] in ("missing_key", "unknown_field", "bad_type") for r in rejected[kind])
        assert expected_output(accepted).accounting[kind].balanced
