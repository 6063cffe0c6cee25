from __future__ import annotations

import pytest

from pinpipe.tables import kind_of_topic, stream_name, topic_name, validate_raw

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
    ],
)
def test_validate_raw(value: object, reason: str | None) -> None:
    assert validate_raw("geo", value) == reason


def test_pin_downloaded_is_a_flag() -> None:
    assert validate_raw("pin", {"index": 1, "downloaded": 2}) == "bad_type:downloaded"
    assert validate_raw("pin", {"index": 1, "downloaded": 0, "follower_count": "12k"}) is None
