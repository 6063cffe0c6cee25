"""The generator: deterministic, linked tables, the real sample's dirt at the real rates, injectable faults."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from pinpipe.errors import ConfigError
from pinpipe.source.jsonl import write_generated_jsonl
from pinpipe.source.sample import load_sample_records
from pinpipe.synth.faults import FAULTS, apply_fault, inject_faults, send_list
from pinpipe.synth.generate import DATE_JOINED_RANGE, TIMESTAMP_RANGE, generate, generate_records
from pinpipe.synth.oracle import clean_record
from pinpipe.synth.profile import PERSON_COLUMNS, PLACE_COLUMNS, pin_profile, repeated_share
from pinpipe.tables import KINDS, RAW_TABLES, validate_raw


@pytest.fixture(scope="module")
def big() -> dict[str, list[dict[str, object]]]:
    return generate_records(100_000, seed=11)  # type: ignore[return-value]


def test_same_seed_and_size_give_the_same_rows_and_smaller_is_a_prefix() -> None:
    a = generate_records(5000, seed=3)
    assert a == generate_records(5000, seed=3)
    smaller = generate_records(1234, seed=3)
    assert all(smaller[k] == a[k][:1234] for k in KINDS)
    assert generate_records(100, seed=4)["pin"] != a["pin"][:100]


def test_tables_are_linked_by_key_and_valid_rows() -> None:
    records = generate_records(3000, seed=1)
    for kind in KINDS:
        key = RAW_TABLES[kind].key
        assert [r[key] for r in records[kind]] == list(range(3000))
        assert all(validate_raw(kind, r) is None for r in records[kind])
        assert all(list(r) == list(RAW_TABLES[kind].column_names) for r in records[kind][:50])
    assert len({r["unique_id"] for r in records["pin"]}) == 3000


def test_dirty_values_match_the_real_rates(big: dict[str, list[dict[str, object]]]) -> None:
    real = pin_profile(load_sample_records("pin"))
    generated = pin_profile(big["pin"])
    checked = {name: rate for name, rate in real.items() if rate >= 0.01}
    assert len(checked) >= 15
    off = {
        name: (rate, generated.get(name, 0.0))
        for name, rate in checked.items()
        if abs(generated.get(name, 0.0) - rate) > 0.2 * rate
    }
    assert not off, off
    for name in ("title=empty", "description=untitled", "image_src=null", "description:likes", "text:cjk"):
        assert generated[name] > 0, name  # rare real dirt is present too


def test_repeated_users_and_coordinates_match_the_sample() -> None:
    # The sample holds ~2.6k of the real table's 11,154 rows: compare a same-size subsample of a same-size table.
    records = generate_records(11154, seed=5)
    chosen = random.Random(0).sample(range(11154), 2727)
    users = [records["user"][i] for i in chosen]
    places = [records["geo"][i] for i in chosen]
    real_users = repeated_share(load_sample_records("user"), PERSON_COLUMNS)
    real_places = repeated_share(load_sample_records("geo"), PLACE_COLUMNS)
    assert abs(repeated_share(users, PERSON_COLUMNS) - real_users) <= 0.2 * real_users
    assert abs(repeated_share(places, PLACE_COLUMNS) - real_places) <= 0.2 * real_places


def test_value_ranges_match_the_sample(big: dict[str, list[dict[str, object]]]) -> None:
    assert len({r["category"] for r in big["pin"]}) == 13
    ages = [r["age"] for r in big["user"]]
    assert min(ages) == 20 and max(ages) == 60  # type: ignore[type-var]
    for kind, column, (low, high) in (
        ("geo", "timestamp", TIMESTAMP_RANGE),
        ("user", "date_joined", DATE_JOINED_RANGE),
    ):
        values = [str(r[column]) for r in big[kind]]  # ISO-like text: compares like the datetimes
        assert str(low) <= min(values) and max(values) <= str(high)
    assert all(-90 <= r["latitude"] <= 90 and -180 <= r["longitude"] <= 180 for r in big["geo"])  # type: ignore[operator]
    assert all(len(str(r["latitude"]).lstrip("-").replace(".", "").lstrip("0")) <= 6 for r in big["geo"][:1000])
    assert len({r["country"] for r in big["geo"]}) > 200


def test_block_rows_are_database_ready() -> None:
    block = next(generate(10, seed=0))
    assert len(block) == 10
    assert isinstance(block.rows["geo"][0][1], datetime) and isinstance(block.records("geo")[0]["timestamp"], str)


@pytest.mark.parametrize("rows", [0, -5])
def test_bad_sizes_are_config_errors(rows: int) -> None:
    with pytest.raises(ConfigError):
        next(generate(rows))
    with pytest.raises(ConfigError):
        send_list(rows)


def test_every_fault_gives_its_quarantine_reason_or_note() -> None:
    records = generate_records(1, seed=0)
    expected = {
        "missing_key": "missing_key",
        "unknown_field": "unknown_field",
        "bad_type": "bad_type",
        "bad_timestamp": "bad_timestamp",
        "bad_coordinates": "bad_coordinates",
    }
    rng = __import__("numpy").random.default_rng(0)
    for kind in KINDS:
        for fault in FAULTS[kind]:
            outcome = clean_record(kind, apply_fault(kind, records[kind][0], fault, rng))
            if fault == "follower_garbage":
                assert (
                    outcome.row is not None
                    and outcome.row["follower_count"] is None
                    and outcome.follower_count_unparsed
                )
            else:
                assert outcome.reason is not None and outcome.reason.startswith(expected[fault]), (kind, fault)
    with pytest.raises(ConfigError):
        apply_fault("user", records["user"][0], "bad_coordinates", rng)


def test_fault_rate_is_respected_and_deterministic() -> None:
    records = generate_records(4000, seed=2)["geo"]
    faulted = inject_faults("geo", records, 0.1, seed=9)
    assert faulted == inject_faults("geo", records, 0.1, seed=9)
    changed = sum(a != b for a, b in zip(records, faulted, strict=True))
    assert 300 < changed < 500
    assert inject_faults("geo", records, 0.0) == records
    with pytest.raises(ConfigError):
        inject_faults("geo", records, 1.5)


def test_send_list_resends_and_conflicts() -> None:
    sent = send_list(2000, seed=3, resend_rate=0.1, conflict_rate=0.05, iso_rate=0.5)
    assert len(sent.posts) == 2000 + 200 + 100
    assert sent == send_list(2000, seed=3, resend_rate=0.1, conflict_rate=0.05, iso_rate=0.5)
    for post in sent.posts:
        assert len({post[k][RAW_TABLES[k].key] for k in KINDS}) == 1  # the three records of a post share a key
    by_key = Counter(post["pin"]["index"] for post in sent.posts)
    assert sum(n - 1 for n in by_key.values()) == 300
    assert any("T" in post["geo"]["timestamp"] for post in sent.posts)


def test_jsonl_files_hold_the_generated_records(tmp_path: Path) -> None:
    paths = write_generated_jsonl(tmp_path / "out", 50, seed=1)
    expected = generate_records(50, seed=1)
    for kind in KINDS:
        assert paths[kind].name == f"{RAW_TABLES[kind].name}.jsonl"
        assert [orjson.loads(line) for line in paths[kind].read_bytes().splitlines()] == expected[kind]
    faulty = write_generated_jsonl(tmp_path / "faulty", 500, seed=1, faults=0.2)
    lines = [orjson.loads(line) for line in faulty["user"].read_bytes().splitlines()]
    assert sum(validate_raw("user", r) is not None or clean_record("user", r).row is None for r in lines) > 30
