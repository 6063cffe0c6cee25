from __future__ import annotations

import pytest

from pinpipe.tables import check_raw, key_of, kind_of_topic, stream_name, topic_name, validate_raw
from pinpipe.values import KEY_RANGE, parse_float, parse_int

GOOD_GEO = {
    "ind": 7,
    "timestamp": "2020-08-28 03:52:47",
    "latitude": -89.5,
    "longitude": 179.6,
    "country": "Chad",
}


def test_names_match_the_original() -> None:
    assert topic_name("0affea73130b", "pin") == "0affea73130b.pin"
    assert stream_name("0affea73130b", "geo") == "streaming-0affea73130b-geo"
    assert kind_of_topic("0affea73130b", "streaming-0affea73130b-user") == "user"
    assert kind_of_topic("0affea73130b", "other.pin") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (GOOD_GEO, None),
        ({**GOOD_GEO, "ind": "12"}, None),
        ({**GOOD_GEO, "country": None}, None),
        ([GOOD_GEO], "not_an_object"),
        ({k: v for k, v in GOOD_GEO.items() if k != "ind"}, "missing_key:ind"),
        ({**GOOD_GEO, "ind": -1}, "bad_key:ind"),
        ({**GOOD_GEO, "ind": True}, "bad_key:ind"),
        ({**GOOD_GEO, "extra": 1}, "unknown_field:extra"),
        ({**GOOD_GEO, "latitude": "north"}, "bad_type:latitude"),
        ({**GOOD_GEO, "timestamp": 12}, "bad_type:timestamp"),
        ({**GOOD_GEO, "country": {"a": 1}}, "bad_type:country"),
        ({**GOOD_GEO, "ind": 2**63 - 1}, None),
        ({**GOOD_GEO, "ind": 2**63}, "bad_key:ind"),
        ({**GOOD_GEO, "ind": "1" * 40}, "bad_key:ind"),
        ({**GOOD_GEO, "ind": "9" * 5000}, "bad_key:ind"),
        ({**GOOD_GEO, "ind": 1.0}, "bad_key:ind"),
        ({**GOOD_GEO, "latitude": " -1.5e1 "}, None),
        ({**GOOD_GEO, "latitude": "1e999"}, "bad_type:latitude"),
        ({**GOOD_GEO, "latitude": "Infinity"}, "bad_type:latitude"),
        ({**GOOD_GEO, "latitude": "9" * 5000}, "bad_type:latitude"),
        ({**GOOD_GEO, "longitude": float("nan")}, "bad_type:longitude"),
        ({**GOOD_GEO, "timestamp": "10000-01-01 00:00:00"}, None),  # a cleaning question: bad_timestamp later
        ({**GOOD_GEO, "country": True}, "bad_type:country"),
    ],
)
def test_validate_raw(value: object, reason: str | None) -> None:
    assert validate_raw("geo", value) == reason


def test_pin_downloaded_is_a_flag() -> None:
    assert validate_raw("pin", {"index": 1, "downloaded": 2}) == "bad_type:downloaded"
    assert validate_raw("pin", {"index": 1, "downloaded": 0, "follower_count": "12k"}) is None


def test_int_columns_are_int64_and_numerals_are_measured_before_conversion() -> None:
    user = {"ind": "0" * 5000 + "42", "age": "-9223372036854775808", "date_joined": "2020-08-28 03:52:47"}
    assert check_raw("user", user) == (
        None,
        {"ind": 42, "first_name": None, "last_name": None, "age": -(2**63), "date_joined": user["date_joined"]},
    )
    assert key_of("user", user) == 42
    for age in ("9" * 5000, "-9223372036854775809", 2**63, "1.0", "1e3", "1_000", "１２", True):
        assert validate_raw("user", {"ind": 1, "age": age}) == "bad_type:age", age
    assert parse_int(" 12\n") == 12 and parse_int("12", KEY_RANGE) == 12 and parse_int("-1", KEY_RANGE) is None
    assert parse_float("1e-400") == 0.0 and parse_float("nan") is None and parse_float(2**64) is None


def test_long_unknown_field_names_are_cut_in_the_reason() -> None:
    assert validate_raw("pin", {"index": 1, "y" * 10**6: 1}) == "unknown_field:" + "y" * 100 + "…"
