"""Airflow 3 DAG ``pinpipe_databricks``: the daily batch job and its quality gate, submitted to Databricks.

For users who run there (the original pipeline ran its cleaning notebooks on Databricks). The same pinpipe
code runs on the cluster with ``--engine spark``: each task is a one-off run (``jobs/runs/submit``) of a
``spark_python_task`` whose file is pinpipe's entry point (``src/pinpipe/__main__.py``, uploaded once) with the
pinpipe wheel installed as a cluster library. Landing stays where the event log is (``pinpipe sink`` as a
service or the ``pinpipe_daily`` DAG); this DAG only schedules the compute.

Setup, once::

    python -m build --wheel            # or: pip wheel --no-deps -w dist .
    databricks fs cp dist/pinpipe-0.1.0-py3-none-any.whl dbfs:/FileStore/pinpipe/
    databricks fs cp src/pinpipe/__main__.py dbfs:/FileStore/pinpipe/pinpipe_main.py
    airflow connections add databricks_default --conn-type databricks \\
        --conn-host https://<workspace>.cloud.databricks.com --conn-password <token>

Params (editable per run; no code edit to repoint): ``databricks_conn_id``, ``existing_cluster_id`` (empty: a
new job cluster from ``new_cluster``), ``new_cluster``, ``python_file``, ``wheel``, ``lake_url`` (an ``s3://``
lake the cluster can reach), ``max_quarantine_share``. Schedule, retries and catch-up as ``pinpipe_daily``; every
task has an ``execution_timeout`` (the cluster run its own ``timeout_seconds``); the ``batch`` task's ``outlets``
are the gold tables as Assets, named as in ``pinpipe_daily``; a manual run without a data interval submits the
batch job with no interval and gates the latest batch run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

default_args: dict[str, Any] = {
    "owner": "pinpipe",
    "depends_on_past": False,
    "email_on_failure": False,
    "email_on_retry": False,
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
}

RUN_TIMEOUT = timedelta(hours=1)
"""The cluster run's ``timeout_seconds``; each task's ``execution_timeout`` adds :data:`TASK_MARGIN` for the cluster
to start and for polling."""
TASK_MARGIN = timedelta(minutes=30)

GOLD_TABLES = (
    "top_category_by_country",
    "top_category_by_year",
    "top_user_by_country",
    "top_country_by_followers",
    "top_category_by_age_group",
    "median_followers_by_age_group",
    "users_joined_by_year",
    "median_followers_by_join_year",
    "median_followers_by_age_group_and_join_year",
)
GOLD_ASSETS = [Asset(name=f"pinpipe_gold_{t}", uri=f"pinpipe://gold/{t}", group="pinpipe") for t in GOLD_TABLES]
"""The gold tables as Assets (the same names as ``pinpipe_daily``'s)."""

DEFAULT_NEW_CLUSTER: dict[str, Any] = {
    "spark_version": "15.4.x-scala2.12",
    "node_type_id": "i3.xlarge",
    "num_workers": 1,
}


def interval_args(start: datetime | None, end: datetime | None) -> list[str]:
    """``--interval-start S --interval-end E``, or nothing for a run without a data interval."""
    if start is None or end is None:
        return []
    return ["--interval-start", start.isoformat(), "--interval-end", end.isoformat()]


def run_spec(params: dict[str, Any], run_name: str, arguments: list[str]) -> dict[str, Any]:
    """The ``jobs/runs/submit`` payload running ``pinpipe ARGUMENTS`` on the cluster the Params choose."""
    spec: dict[str, Any] = {
        "run_name": run_name,
        "spark_python_task": {
            "python_file": params["python_file"],
            "parameters": [*arguments],
        },
        "libraries": [{"whl": params["wheel"]}],
        "timeout_seconds": int(RUN_TIMEOUT.total_seconds()),
    }
    if params.get("existing_cluster_id"):
        spec["existing_cluster_id"] = params["existing_cluster_id"]
    else:
        spec["new_cluster"] = params["new_cluster"]
    return spec


with DAG(
    dag_id="pinpipe_databricks",
    description="The pinpipe batch job and quality gate as Databricks one-off runs (spark engine).",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 8, 18, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["pinpipe", "databricks"],
    params={
        "databricks_conn_id": Param("databricks_default", type="string", description="Databricks Connection"),
        "existing_cluster_id": Param("", type="string", description="run on this cluster (empty: new_cluster)"),
        "new_cluster": Param(DEFAULT_NEW_CLUSTER, type="object", description="job cluster spec"),
        "python_file": Param(
            "dbfs:/FileStore/pinpipe/pinpipe_main.py", type="string", description="pinpipe's entry point on DBFS"
        ),
        "wheel": Param(
            "dbfs:/FileStore/pinpipe/pinpipe-0.1.0-py3-none-any.whl", type="string", description="pinpipe wheel"
        ),
        "lake_url": Param("s3://my-bucket/lake", type="string", description="lake URL the cluster can reach"),
        "max_quarantine_share": Param(0.05, type="number", minimum=0, maximum=1, description="quality gate"),
    },
) as dag:

    @task(execution_timeout=timedelta(minutes=5))
    def batch_spec(data_interval_start: Any = None, data_interval_end: Any = None, params: Any = None) -> Any:
        """The submit payload of ``pinpipe batch --engine spark`` over this run's data interval."""
        return run_spec(
            params,
            "pinpipe batch",
            [
                "batch",
                "--engine",
                "spark",
                "--lake",
                params["lake_url"],
                *interval_args(data_interval_start, data_interval_end),
            ],
        )

    @task(execution_timeout=timedelta(minutes=5))
    def quality_spec(data_interval_start: Any = None, data_interval_end: Any = None, params: Any = None) -> Any:
        """The submit payload of ``pinpipe quality`` for the batch run of this interval."""
        return run_spec(
            params,
            "pinpipe quality",
            [
                "quality",
                "--lake",
                params["lake_url"],
                "--max-quarantine-share",
                str(params["max_quarantine_share"]),
                *interval_args(data_interval_start, data_interval_end),
            ],
        )

    batch = DatabricksSubmitRunOperator(
        task_id="batch",
        json=batch_spec(),
        databricks_conn_id="{{ params.databricks_conn_id }}",
        polling_period_seconds=30,
        execution_timeout=RUN_TIMEOUT + TASK_MARGIN,
        outlets=GOLD_ASSETS,
    )
    quality = DatabricksSubmitRunOperator(
        task_id="quality",
        json=quality_spec(),
        databricks_conn_id="{{ params.databricks_conn_id }}",
        polling_period_seconds=30,
        execution_timeout=RUN_TIMEOUT + TASK_MARGIN,
    )
    batch >> quality
