"""The batch job's Delta-MERGE path (``spark.delta_writer = "delta-spark"``, what a Databricks cluster uses)
against a stand-in ``delta.tables``: the same tables and progress as DuckDB in two runs over two partitions.

No Delta jar can be loaded here (no Maven), so ``tests/fixtures/fake_delta`` stands in for delta-spark: its
``DeltaTable`` runs the MERGE pinpipe asks for with delta-rs and honours Delta's idempotent-write confs, and a
PySpark data source named ``delta`` takes the empty appends that carry the other partitions' progress. What this
proves is pinpipe's side of the calls (conditions, bucket column, txn confs and options, counts from the
metrics); Delta's own behaviour on those calls is not exercised here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from pinpipe.batch.job import run_batch
from pinpipe.engine import DuckDBEngine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake, landed_key
from pinpipe.tables import KINDS, Kind, batch_app_id, silver_bucket, topic_name
from tests.fixtures.sample_silver import raw_rows
from tests.fixtures.spark_cluster import lake_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "fixtures" / "fake_delta"
PREFIX = "0affea73130b"
MARK = "RESULT-JSON:"

SCRIPT = f"MARK = {MARK!r}\nPREFIX = {PREFIX!r}\n" + textwrap.dedent(
    """
    import json, sys
    from fake_delta_source import FakeDeltaSource
    from pinpipe.batch.job import run_batch
    from pinpipe.config import SparkSettings
    from pinpipe.engine import SparkEngine
    from pinpipe.engine.spark_delta import uses_delta_spark
    from pinpipe.lake.store import Lake

    engine = SparkEngine(SparkSettings(master="local[2]", driver_memory="1g", delta_writer="delta-spark"))
    engine.session.dataSource.register(FakeDeltaSource)
    auto = SparkEngine(SparkSettings(master="local[2]"))  # the same session, the default setting
    out = {"auto": uses_delta_spark(auto), "runs": []}
    for url in sys.argv[1:]:
        result = run_batch(Lake(url), engine, PREFIX)
        out["runs"].append([run.accounting_line() for run in result.kinds.values()])
    engine.close()
    print(MARK + json.dumps(out), flush=True)
    """
)


def _partition(kind: Kind, row: Any) -> int:
    """The log partition of a record: ``bucket % 2`` of its ``ind`` (0 for a record without a usable one)."""
    value = row.get("index" if kind == "pin" else "ind") if isinstance(row, dict) else None
    return silver_bucket(value, 16) % 2 if isinstance(value, int) else 0


def _land(lake: Lake, records: dict[Kind, list[Any]], offsets: dict[tuple[Kind, int], int]) -> None:
    """Each kind's records into two partitions (by the log's placement, ``bucket % 2``), 200 per object;
    ``offsets`` holds (and advances) each partition's next offset."""
    for kind, rows in records.items():
        for p in (0, 1):
            mine = [r for r in rows if _partition(kind, r) == p]
            lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in mine]
            for i in range(0, len(lines), 200):
                chunk = lines[i : i + 200]
                start = offsets.get((kind, p), 0)
                lake.put(landed_key(topic_name(PREFIX, kind), p, start), b"\n".join(chunk) + b"\n")
                offsets[(kind, p)] = start + len(chunk)


def _phases() -> list[dict[Kind, list[Any]]]:
    rows = {kind: raw_rows(kind) for kind in KINDS}
    later: dict[Kind, list[Any]] = {
        "pin": [{**r, "title": f"changed {i}"} for i, r in enumerate(rows["pin"][:40])]
        + [{**r, "index": int(r["index"]) + 1_000_000} for r in rows["pin"][40:60]]
        + [b'{"index": "not a number"}'],
        "geo": [{**r, "country": "Atlantis"} for r in rows["geo"][:30]] + [{**rows["geo"][30], "latitude": 123.0}],
        "user": [*rows["user"][:25], {**rows["user"][25], "date_joined": "yesterday"}],
    }
    return [rows, later]


def test_the_delta_merge_path_gives_duckdbs_tables_and_progress(tmp_path: Path) -> None:
    duck_lake = Lake(f"file://{tmp_path / 'duck'}")
    native = Lake(f"file://{tmp_path / 'native'}")
    offsets_duck: dict[tuple[Kind, int], int] = {}
    offsets_native: dict[tuple[Kind, int], int] = {}
    log = tmp_path / "fake-delta.jsonl"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "FAKE_DELTA_LOG": str(log)}
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE), str(REPO / "src"), str(REPO)])
    env.pop("PYSPARK_PYTHON", None)
    for phase, records in enumerate(_phases(), start=1):
        _land(duck_lake, records, offsets_duck)
        _land(native, records, offsets_native)
        with DuckDBEngine() as duck:
            want = [run.accounting_line() for run in run_batch(duck_lake, duck, PREFIX).kinds.values()]
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, native.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
        assert lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
        got = json.loads(lines[-1][len(MARK) :])
        assert got["auto"] is False  # delta.tables importable, but not a Databricks or Delta-enabled session
        assert got["runs"] == [want], phase
        snapshot, expected = lake_snapshot(native), lake_snapshot(duck_lake)
        for name in expected:
            assert snapshot[name] == expected[name], (phase, name)
        for kind in KINDS:
            apps = [batch_app_id(topic_name(PREFIX, kind), p) for p in (0, 1)]
            progress = delta.txn_versions(native, kind, apps)
            assert progress == delta.txn_versions(duck_lake, kind, apps) and None not in progress.values()
    assert "updated 40" in want[0]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    silver = [c for c in calls if "condition" in c and "/silver/" in c["path"]]
    assert len(silver) == 6 and all("bucket" in c["condition"] and c["update"] for c in silver)
    assert all(c["app"] == batch_app_id(topic_name(PREFIX, c["path"].rsplit("/", 1)[-1]), 0) for c in silver)
    writes = [c for c in calls if "write" in c]
    assert sorted(c["app"] for c in writes) == sorted(
        batch_app_id(topic_name(PREFIX, kind), 1) for kind in KINDS for _ in (1, 2)
    )
    quarantine = [c for c in calls if "condition" in c and "/quarantine/" in c["path"]]
    assert quarantine and all(c["app"] is None and c["insert"] and c["update"] is None for c in quarantine)
