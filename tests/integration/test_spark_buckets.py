"""Bucketed silver on the Spark engine: executors create and merge it as DuckDB lays it out (local mode).

Three lakes get the same input in three runs — one processed by DuckDB only, one by Spark only (so Spark creates
its tables), one by DuckDB, then Spark, then DuckDB — and after every run silver, quarantine, gold and the
accounting of all three are equal. The third run updates old ``ind`` again after Spark rewrote their files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pinpipe.batch.job import BatchResult, run_batch
from pinpipe.engine import DuckDBEngine, SparkEngine
from pinpipe.engine.spark_buckets import bucket_of, merge_buckets
from pinpipe.engine.spark_io import LakeRef
from pinpipe.lake import delta
from pinpipe.lake.data_files import table_files
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS, SILVER_BUCKET, SILVER_SCHEMAS, Kind, silver_bucket
from tests.fixtures.batch_lake import land
from tests.fixtures.local_spark import spark_fixture
from tests.fixtures.sample_silver import raw_rows
from tests.fixtures.spark_cluster import lake_snapshot, land_sample_phase

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["spark_fixture"]

PREFIX = "0affea73130b"


def test_spark_buckets_inds_as_zlib_does(spark: SparkEngine) -> None:
    inds = [0, 1, -1, 7, 10, 99, 1_000_000, -(2**63), 2**63 - 1, 123456789012, -42, 4_000_000_001]
    df = spark.session.createDataFrame([(i,) for i in inds], "ind bigint")
    for buckets in (16, 7, 1):
        got = {r["ind"]: r["b"] for r in df.select("ind", bucket_of(spark.F, buckets).alias("b")).collect()}
        assert got == {i: silver_bucket(i, buckets) for i in inds}, buckets


def _land_phase_3(lake: Lake) -> None:
    """Old ``ind`` changed again (some updated in phase 2 too), identical re-sends, new ``ind``."""
    rows = {kind: raw_rows(kind) for kind in KINDS}
    offsets = {"pin": len(rows["pin"]) + 62, "geo": len(rows["geo"]) + 31, "user": len(rows["user"]) + 26}
    later: dict[Kind, list[Any]] = {
        "pin": [{**r, "category": "changed again"} for r in rows["pin"][20:70]] + rows["pin"][500:510],
        "geo": [{**r, "country": "Lemuria"} for r in rows["geo"][10:50]]
        + [{**r, "ind": int(r["ind"]) + 2_000_000} for r in rows["geo"][:15]],
        "user": [{**r, "age": 99} for r in rows["user"][100:130]],
    }
    for kind, records in later.items():
        land(lake, {kind: records}, per_object=20, first_offset=offsets[kind])


def _lines(result: BatchResult) -> list[str]:
    return [run.accounting_line() for run in result.kinds.values()]


def test_duckdb_spark_and_mixed_lakes_stay_equal_over_three_runs(tmp_path: Path, spark: SparkEngine) -> None:
    lakes = {name: Lake(f"file://{tmp_path / name}") for name in ("duck", "spark", "mixed")}
    with DuckDBEngine() as duck:
        engines = {"duck": [duck] * 3, "spark": [spark] * 3, "mixed": [duck, spark, duck]}
        for phase in (1, 2, 3):
            for lake in lakes.values():
                land_sample_phase(lake, phase) if phase < 3 else _land_phase_3(lake)
            lines = {name: _lines(run_batch(lake, engines[name][phase - 1], PREFIX)) for name, lake in lakes.items()}
            assert lines["spark"] == lines["duck"] == lines["mixed"], phase
            want = lake_snapshot(lakes["duck"])
            for name in ("spark", "mixed"):
                got = lake_snapshot(lakes[name])
                for table in want:
                    assert got[table] == want[table], (phase, name, table)
            if phase > 1:
                assert "updated 0" not in lines["duck"][0], lines["duck"]  # old ind did change
    for kind in KINDS:
        dt = delta.open_table(lakes["spark"], "silver", kind)
        assert dt is not None and list(dt.metadata().partition_columns) == [SILVER_BUCKET]
        files = table_files(dt)
        assert all(f.path.startswith(f"{SILVER_BUCKET}={f.bucket}/") for f in files), kind
        assert {f.bucket for f in files} == set(range(16)), kind
        table = delta.read_table(lakes["spark"], "silver", kind, columns=["ind", SILVER_BUCKET])
        assert table is not None
        assert all(silver_bucket(i, 16) == b for i, b in zip(*table.to_pydict().values(), strict=True)), kind


def test_a_merge_reads_and_rewrites_only_the_files_of_its_keys_buckets(tmp_path: Path, spark: SparkEngine) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    land_sample_phase(lake, 1)
    with DuckDBEngine() as duck:
        run_batch(lake, duck, PREFIX, gold=False)
    before = delta.read_table(lake, "silver", "user")
    dt = delta.open_table(lake, "silver", "user")
    assert before is not None and dt is not None
    files = table_files(dt)
    old = before.sort_by("ind").slice(0, 3).to_pylist()
    changed = [{**row, "age": 77} for row in old[:2]] + [old[2]]  # two updates, one identical row
    new = {"ind": 9_999_999, "user_name": "New Person", "age": 30, "date_joined": None}
    schema = SILVER_SCHEMAS["user"]
    winners = spark.frame(pa.Table.from_pylist([*changed, new], schema=schema))
    counts = merge_buckets(spark, lake, LakeRef.of(lake), "user", winners, winners.limit(0), {"pinpipe-test": 1})
    assert (counts.inserted, counts.updated, counts.unchanged) == (1, 2, 1)
    keys = [row["ind"] for row in [*changed, new]]
    could_hold = [
        f
        for f in files
        if any(silver_bucket(k, 16) == f.bucket and f.low is not None and f.low <= k <= (f.high or k) for k in keys)
    ]
    assert counts.files_read == len(could_hold) < len(files)
    after = delta.read_table(lake, "silver", "user")
    assert after is not None and after.num_rows == before.num_rows + 1
    got = {r["ind"]: r for r in after.to_pylist()}
    assert [got[row["ind"]]["age"] for row in changed] == [77, 77, old[2]["age"]]
    assert delta.txn_version(lake, "user", "pinpipe-test") == 1
    dt_after = delta.open_table(lake, "silver", "user")
    assert dt_after is not None
    removed = {f.path for f in files} - {f.path for f in table_files(dt_after)}
    assert 1 <= len(removed) == counts.files_removed <= 2  # the files holding the two updated rows
    assert removed <= {f.path for f in could_hold}
