"""PySpark 3.5 (the Spark of the Databricks LTS runtimes) in its own virtualenv, ``.venv-spark35``: the batch job
on the Spark engine, and the gold queries through the driver's Arrow path, give DuckDB's tables.

The virtualenv is built by ``make spark35`` from ``requirements-spark35.lock`` (``make test`` builds it first);
the script below runs with its interpreter and this checkout's ``src`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pinpipe.batch.gold import read_gold
from pinpipe.batch.job import run_batch
from pinpipe.engine import DuckDBEngine
from pinpipe.lake.store import Lake
from tests.fixtures.spark_cluster import lake_snapshot, land_sample_phase

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SPARK35_PYTHON = REPO / ".venv-spark35" / "bin" / "python"
MARK = "RESULT-JSON:"

SCRIPT = f"MARK = {MARK!r}\n" + (
    """
import json, sys
import pyspark
from pinpipe.batch.gold import compute_gold_from_arrow, read_gold, SILVER_COLUMNS
from pinpipe.batch.job import run_batch
from pinpipe.config import SparkSettings
from pinpipe.engine import SparkEngine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake

lake = Lake(sys.argv[1])
engine = SparkEngine(SparkSettings(master="local[2]", driver_memory="1g"))
result = run_batch(lake, engine, "0affea73130b")
silver = {k: delta.read_table(lake, "silver", k, columns=SILVER_COLUMNS[k]) for k in ("pin", "geo", "user")}
driver_gold = compute_gold_from_arrow(engine, silver)  # createDataFrame from pandas, _collect_as_arrow
out = {
    "version": pyspark.__version__,
    "lines": [run.accounting_line() for run in result.kinds.values()],
    "driver_gold": {name: table.to_pylist() for name, table in driver_gold.items()},
}
engine.close()
print(MARK + json.dumps(out, default=str), flush=True)
"""
)


def _build_venv() -> str | None:
    """Build ``.venv-spark35`` with ``make spark35`` if it is missing; the reason it cannot be built, or None."""
    if SPARK35_PYTHON.exists():
        return None
    try:
        proc = subprocess.run(["make", "spark35"], cwd=REPO, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`make spark35` could not run: {exc}"
    if proc.returncode != 0 or not SPARK35_PYTHON.exists():
        return f"`make spark35` failed (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}"
    return None


def _run(lake: Lake) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_PYTHON", None)
    proc = subprocess.run(
        [str(SPARK35_PYTHON), "-c", textwrap.dedent(SCRIPT), lake.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK) :])
            return result
    raise AssertionError(f"no result (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def test_pyspark35_batch_and_gold_equal_duckdb(tmp_path: Path) -> None:
    reason = _build_venv()
    if reason is not None:
        print(f"SKIP: the PySpark 3.5 virtualenv cannot be built: {reason}", file=sys.stderr)
        pytest.skip(f"the PySpark 3.5 virtualenv cannot be built: {reason}")
    duck, spark = Lake(f"file://{tmp_path / 'duck'}"), Lake(f"file://{tmp_path / 'spark35'}")
    for lake in (duck, spark):
        land_sample_phase(lake, 1)
        land_sample_phase(lake, 2)
    with DuckDBEngine() as engine:
        expected = run_batch(duck, engine, "0affea73130b")
    got = _run(spark)
    assert got["version"].startswith("3.5."), got["version"]
    assert got["lines"] == [run.accounting_line() for run in expected.kinds.values()]
    on_duck, on_spark = lake_snapshot(duck), lake_snapshot(spark)
    for name in on_duck:
        assert on_spark[name] == on_duck[name], name
    assert json.loads(json.dumps(got["driver_gold"])) == json.loads(json.dumps(read_gold(duck), default=str))
