"""``pinpipe batch --engine spark`` on a real standalone cluster (master + two one-core workers on 127.0.0.1).

The same landed input goes to a DuckDB lake (``file://``) and to a lake on S3 (moto) that the cluster processes —
its executors reach S3 through obstore, with no Hadoop connector — in two runs (the second one updates, re-sends,
adds and quarantines); after each run the accounting, silver, quarantine and gold are identical, and the master's
status shows the batch ran as applications with executors on both workers' cores.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from pinpipe.config import LakeSettings
from pinpipe.lake.store import Lake
from tests.fixtures.services import Service
from tests.fixtures.spark_cluster import (
    SparkCluster,
    lake_snapshot,
    land_sample_phase,
    run_batch_cli,
    spark_cluster_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["spark_cluster_fixture"]


def _s3_lake(moto: Service) -> tuple[Lake, dict[str, str]]:
    """A new bucket on moto, the lake in it, and the environment that points pinpipe at it."""
    import boto3

    name = f"cluster-{uuid.uuid4().hex[:12]}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", **keys).create_bucket(Bucket=name)
    settings = LakeSettings.model_validate(
        {"endpoint": moto.url, "access_key_id": "testing", "secret_access_key": "testing"}
    )
    env = {
        "PINPIPE__LAKE__ENDPOINT": moto.url,
        "PINPIPE__LAKE__ACCESS_KEY_ID": "testing",
        "PINPIPE__LAKE__SECRET_ACCESS_KEY": "testing",
    }
    return Lake(f"s3://{name}/lake", settings), env


def test_cluster_batch_on_s3_equals_duckdb_in_two_runs(
    tmp_path: Path, spark_cluster: SparkCluster, moto: Service
) -> None:
    duck = Lake(f"file://{tmp_path / 'duck'}")
    cluster, env = _s3_lake(moto)
    before = {app["id"] for app in spark_cluster.status()["completedapps"]}
    flags = ["--engine", "spark", "--spark-master", spark_cluster.master_url]
    for conf in spark_cluster.spark_conf():
        flags += ["--spark-conf", conf]
    for phase in (1, 2):
        land_sample_phase(duck, phase)
        land_sample_phase(cluster, phase)
        on_duck = run_batch_cli(sys.executable, duck, "--engine", "duckdb")
        on_cluster = run_batch_cli(sys.executable, cluster, *flags, env=env)
        assert on_cluster == on_duck, phase
        got, want = lake_snapshot(cluster), lake_snapshot(duck)
        for name in want:
            assert got[name] == want[name], (phase, name)
    assert "updated 40" in on_duck and "quarantined 2" in on_duck  # the second run did change and reject rows
    apps = [app for app in spark_cluster.status()["completedapps"] if app["id"] not in before]
    assert [app["name"] for app in apps] == ["pinpipe", "pinpipe"]
    assert all(app["state"] == "FINISHED" and app["cores"] == 2 for app in apps), apps
