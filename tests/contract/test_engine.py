"""The Engine contract, run against every engine: SQLFrame on DuckDB and PySpark.

Cleaning and gold use only ``engine.frame``/``engine.collect``/``engine.to_arrow`` with ``engine.F`` and
``engine.Window``; these tests pin what those promise, independently of the pipeline's programs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pytest

from pinpipe.engine import Engine, open_engine

UTC = dt.UTC


@pytest.fixture(scope="module", params=["duckdb", pytest.param("spark", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    started = open_engine(request.param)
    try:
        yield started
    finally:
        started.close()


def _rows() -> pa.Table:
    return pa.table(
        {
            "ind": pa.array([3, 1, 2, 4], pa.int64()),
            "kind": ["b", "a", "a", None],
            "x": pa.array([1.5, None, -2.25, 1e300], pa.float64()),
            "ts": pa.array(
                [dt.datetime(2020, 8, 28, 3, 52, 47, tzinfo=UTC), None, dt.datetime(2017, 1, 1, tzinfo=UTC), None],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def _ranked(frames: Mapping[str, Any], engine: Engine) -> dict[str, Any]:
    F, W = engine.F, engine.Window
    df = frames["rows"]
    window = W.partitionBy("kind").orderBy(F.col("ind").desc())
    ranked = df.withColumn("rank", F.row_number().over(window)).withColumn("hour", F.hour("ts"))
    return {"ranked": ranked.select("ind", "kind", "rank", "hour"), "count": df.groupBy().agg(F.count("*").alias("n"))}


def test_frame_and_to_arrow_round_trip_values(engine: Engine) -> None:
    back = engine.to_arrow(engine.frame(_rows()))
    by_ind = {r["ind"]: r for r in back.to_pylist()}
    assert by_ind[3] == {"ind": 3, "kind": "b", "x": 1.5, "ts": dt.datetime(2020, 8, 28, 3, 52, 47, tzinfo=UTC)}
    assert by_ind[1]["x"] is None and by_ind[1]["ts"] is None and by_ind[4]["kind"] is None
    assert by_ind[4]["x"] == 1e300


def test_collect_runs_a_window_program_in_utc(engine: Engine) -> None:
    out = engine.collect("contract:ranked", {"rows": _rows()}, lambda frames: _ranked(frames, engine))
    ranked = sorted(out["ranked"].to_pylist(), key=lambda r: r["ind"])
    assert [(r["ind"], r["kind"], r["rank"]) for r in ranked] == [(1, "a", 2), (2, "a", 1), (3, "b", 1), (4, None, 1)]
    assert [r["hour"] for r in ranked] == [None, 0, 3, None]  # the session runs in UTC
    assert out["count"].to_pylist() == [{"n": 4}]


def test_collect_again_with_other_data_gives_that_datas_answer(engine: Engine) -> None:
    first = _rows().slice(0, 2)
    out1 = engine.collect("contract:ranked", {"rows": first}, lambda frames: _ranked(frames, engine))
    out2 = engine.collect("contract:ranked", {"rows": _rows()}, lambda frames: _ranked(frames, engine))
    assert out1["count"].to_pylist() == [{"n": 2}] and out2["count"].to_pylist() == [{"n": 4}]


def test_collect_on_empty_input_returns_empty_tables(engine: Engine) -> None:
    out = engine.collect("contract:ranked", {"rows": _rows().slice(0, 0)}, lambda frames: _ranked(frames, engine))
    assert out["ranked"].num_rows == 0 and out["ranked"].column_names == ["ind", "kind", "rank", "hour"]
    assert out["count"].to_pylist() == [{"n": 0}]
