"""The gold queries give identical tables on SQLFrame/DuckDB and on real PySpark (one Spark session per run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pinpipe.batch.gold import compute_gold_from_arrow
from pinpipe.engine import DuckDBEngine, Engine, SparkEngine
from tests.fixtures.gold_cases import EXPECTED, EXTRA_USERS, POSTS, oracle, silver_from_posts
from tests.fixtures.sample_silver import sample_silver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def spark() -> Iterator[Engine]:
    pytest.importorskip("pyspark")
    engine = SparkEngine()
    engine.session.conf.set("spark.sql.shuffle.partitions", "1")  # tiny inputs: one task per stage
    try:
        yield engine
    finally:
        engine.close()


def test_spark_gives_the_known_answers_on_hand_built_silver(spark: Engine) -> None:
    gold = compute_gold_from_arrow(spark, silver_from_posts(POSTS, extra_users=EXTRA_USERS))
    assert {name: table.to_pylist() for name, table in gold.items()} == EXPECTED


def test_spark_and_duckdb_agree_on_the_real_sample(spark: Engine) -> None:
    with DuckDBEngine() as duck:
        silver, _ = sample_silver(duck)
        on_duck = compute_gold_from_arrow(duck, silver)
    on_spark = compute_gold_from_arrow(spark, silver)
    for name, table in on_duck.items():
        assert on_spark[name].schema == table.schema, name
        assert on_spark[name].equals(table), name
    assert {name: table.to_pylist() for name, table in on_spark.items()} == oracle(silver)
