"""Gold queries on SQLFrame/DuckDB: hand-built silver with known answers, the real sample against an oracle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from pinpipe.batch.gold import (
    GOLD_SCHEMAS,
    GOLD_TABLES,
    compute_gold,
    compute_gold_from_arrow,
    read_gold,
    read_gold_tables,
    write_gold,
)
from pinpipe.engine import DuckDBEngine, Engine
from pinpipe.errors import InvalidInputError, NotFoundError
from pinpipe.lake.store import Lake
from tests.fixtures.gold_cases import EXPECTED, EXTRA_USERS, POSTS, Post, oracle, silver_from_posts
from tests.fixtures.sample_silver import sample_silver

SPEC_COLUMNS = {
    "top_category_by_country": ["country", "category", "category_count"],
    "top_category_by_year": ["post_year", "category", "category_count"],
    "top_user_by_country": ["country", "poster_name", "follower_count"],
    "top_country_by_followers": ["country", "follower_count"],
    "top_category_by_age_group": ["age_group", "category", "category_count"],
    "median_followers_by_age_group": ["age_group", "median_follower_count"],
    "users_joined_by_year": ["post_year", "number_users_joined"],
    "median_followers_by_join_year": ["post_year", "median_follower_count"],
    "median_followers_by_age_group_and_join_year": ["age_group", "post_year", "median_follower_count"],
}


@pytest.fixture(scope="module")
def duck() -> Iterator[Engine]:
    with DuckDBEngine() as engine:
        yield engine


@pytest.fixture(scope="module")
def hand_gold(duck: Engine) -> dict[str, pa.Table]:
    return compute_gold_from_arrow(duck, silver_from_posts(POSTS, extra_users=EXTRA_USERS))


def test_names_columns_and_types_are_the_contract(hand_gold: dict[str, pa.Table]) -> None:
    assert list(GOLD_TABLES) == list(SPEC_COLUMNS)
    assert list(hand_gold) == list(GOLD_TABLES)
    for name, table in hand_gold.items():
        assert table.schema.names == SPEC_COLUMNS[name]
        assert table.schema == GOLD_SCHEMAS[name]
        for field in table.schema:
            assert field.type in (pa.string(), pa.int64()), (name, field)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_hand_built_silver_gives_the_known_answer(name: str, hand_gold: dict[str, pa.Table]) -> None:
    assert hand_gold[name].to_pylist() == EXPECTED[name]


def test_oracle_agrees_with_the_hand_computed_answers() -> None:
    assert oracle(silver_from_posts(POSTS, extra_users=EXTRA_USERS)) == EXPECTED


def test_lower_median_on_odd_and_even_counts(duck: Engine) -> None:
    values = [[7], [7, 3], [5, 1, 9], [4, 2, 8, 6], [10, 10, 30, 20, 40], [1, 2, 3, 4, 5, 6]]
    expected = [7, 3, 5, 4, 20, 3]
    posts: list[Post] = []
    for group, followers in enumerate(values):
        age = 18 + group  # the groups differ by join year
        for value in followers:
            posts.append((len(posts), "art", "p", value, "X", 2019, f"u{len(posts)}", age, 2015 + group))
    gold = compute_gold_from_arrow(duck, silver_from_posts(posts))
    got = {r["post_year"]: r["median_follower_count"] for r in gold["median_followers_by_join_year"].to_pylist()}
    assert got == {2015 + i: m for i, m in enumerate(expected)}


def test_boundary_ages_fall_in_the_right_groups_in_natural_order(duck: Engine) -> None:
    ages = {17: None, 18: "18-24", 24: "18-24", 25: "25-35", 35: "25-35", 36: "36-50", 50: "36-50", 51: "+50"}
    posts: list[Post] = [(i, "art", "p", 1000 + age, "X", 2019, f"u{i}", age, 2016) for i, age in enumerate(ages)]
    gold = compute_gold_from_arrow(duck, silver_from_posts(posts))
    rows = gold["median_followers_by_age_group"].to_pylist()
    assert [r["age_group"] for r in rows] == ["18-24", "25-35", "36-50", "+50"]
    # lower medians of (1018, 1024), (1025, 1035), (1036, 1050), (1051)
    assert [r["median_follower_count"] for r in rows] == [1018, 1025, 1036, 1051]


def test_empty_silver_gives_empty_tables_with_the_schema(duck: Engine) -> None:
    gold = compute_gold_from_arrow(duck, silver_from_posts([]))
    for name, table in gold.items():
        assert table.num_rows == 0
        assert table.schema == GOLD_SCHEMAS[name]


def test_missing_silver_kind_is_a_clear_error(duck: Engine) -> None:
    silver = silver_from_posts(POSTS)
    frames = {kind: duck.frame(silver[kind]) for kind in ("pin", "geo")}
    with pytest.raises(InvalidInputError, match="missing: user"):
        compute_gold(duck, frames)


def test_real_sample_matches_the_oracle(duck: Engine) -> None:
    silver, _ = sample_silver(duck)
    gold = compute_gold_from_arrow(duck, silver)
    assert {name: t.to_pylist() for name, t in gold.items()} == oracle(silver)
    # facts about the real sample (seed notes §4): the top-country tie, only 2015–2017 joins, four age groups
    assert gold["top_country_by_followers"].to_pylist() == [
        {"country": "American Samoa", "follower_count": 8_000_000},
        {"country": "Angola", "follower_count": 8_000_000},
    ]
    assert gold["users_joined_by_year"].column("post_year").to_pylist() == [2015, 2016, 2017]
    assert gold["median_followers_by_age_group"].column("age_group").to_pylist() == ["18-24", "25-35", "36-50", "+50"]


def test_gold_round_trips_through_delta(tmp_path: Path, hand_gold: dict[str, pa.Table]) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    with pytest.raises(NotFoundError, match="no gold tables") as info:
        read_gold(lake)
    assert "pinpipe batch" in str(info.value)
    assert write_gold(lake, hand_gold) == list(GOLD_TABLES)
    assert write_gold(lake, hand_gold) == []  # the same rows again: nothing to commit, never doubled
    assert read_gold(lake) == EXPECTED
    assert {n: t.schema for n, t in read_gold_tables(lake).items()} == GOLD_SCHEMAS


def test_partial_gold_names_the_missing_tables(tmp_path: Path, hand_gold: dict[str, pa.Table]) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    write_gold(lake, {"users_joined_by_year": hand_gold["users_joined_by_year"]})
    with pytest.raises(NotFoundError, match="top_category_by_country"):
        read_gold_tables(lake)
    assert list(read_gold_tables(lake, required=False)) == ["users_joined_by_year"]
