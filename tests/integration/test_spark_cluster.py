"""``pinpipe batch --engine spark`` on a real standalone cluster (master + two one-core workers on 127.0.0.1).

The same landed input goes to a DuckDB lake and to a lake the cluster processes, in two runs (the second one
updates, re-sends, adds and quarantines); after each run the accounting, silver, quarantine and gold are identical,
and the master's status shows the batch ran as applications with executors on both workers' cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pinpipe.lake.store import Lake
from tests.fixtures.spark_cluster import (
    SparkCluster,
    lake_snapshot,
    land_sample_phase,
    run_batch_cli,
    spark_cluster_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["spark_cluster_fixture"]


def test_cluster_batch_equals_duckdb_in_two_runs(tmp_path: Path, spark_cluster: SparkCluster) -> None:
    duck, cluster = Lake(f"file://{tmp_path / 'duck'}"), Lake(f"file://{tmp_path / 'cluster'}")
    before = {app["id"] for app in spark_cluster.status()["completedapps"]}
    flags = ["--engine", "spark", "--spark-master", spark_cluster.master_url]
    for conf in spark_cluster.spark_conf():
        flags += ["--spark-conf", conf]
    for phase in (1, 2):
        land_sample_phase(duck, phase)
        land_sample_phase(cluster, phase)
        on_duck = run_batch_cli(sys.executable, duck, "--engine", "duckdb")
        on_cluster = run_batch_cli(sys.executable, cluster, *flags)
        assert on_cluster == on_duck, phase
        got, want = lake_snapshot(cluster), lake_snapshot(duck)
        for name in want:
            assert got[name] == want[name], (phase, name)
    assert "updated 40" in on_duck and "quarantined 2" in on_duck  # the second run did change and reject rows
    apps = [app for app in spark_cluster.status()["completedapps"] if app["id"] not in before]
    assert [app["name"] for app in apps] == ["pinpipe", "pinpipe"]
    assert all(app["state"] == "FINISHED" and app["cores"] == 2 for app in apps), apps
