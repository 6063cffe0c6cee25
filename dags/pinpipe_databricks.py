"""Airflow 3 DAG ``pinpipe_databricks``: the daily batch job and its quality gate, submitted to Databricks.

For users who run there (the original pipeline ran its cleaning notebooks on Databricks). The same pinpipe
code runs on a cluster of a current LTS runtime (15.4 LTS or 16.4 LTS: Spark 3.5) with ``--engine spark``: each
task is a one-off run (``jobs/runs/submit``) of a ``spark_python_task`` whose file is pinpipe's Databricks entry
point (``src/pinpipe/databricks_task.py``, uploaded as a workspace file), with the pinpipe wheel installed from
a Unity Catalog volume as a cluster library (DBFS root is deprecated for both). On the cluster the entry point
runs on the cluster's SparkSession and, ``delta.tables`` being there, merges silver with Delta's own MERGE and
idempotent writes. Landing stays where the event log is (``pinpipe sink`` as a service or the ``pinpipe_daily``
DAG); this DAG only schedules the compute.

Setup, once::

    python -m build --wheel            # or: pip wheel --no-deps -w dist .
    databricks fs cp dist/pinpipe-0.1.0-py3-none-any.whl dbfs:/Volumes/main/pinpipe/artifacts/
    databricks workspace import --format AUTO --file src/pinpipe/databricks_task.py \
        /Workspace/Shared/pinpipe/databricks_task.py
    airflow connections add databricks_default --conn-type databricks \
        --conn-host https://<workspace>.cloud.databricks.com --conn-password <token>

Exit classes: a failed pinpipe command fails its Databricks run with the error ``pinpipe-exit <code> <class>:
…`` (the entry point raises it; the provider copies the run's error into its failure). :class:`PinpipeSubmitRun`
reads it back: 2, 3 and 65 (a bad flag, an accounting gap, bad data or state) fail the task at once, anything
else (75: a service unavailable; a crash; a cluster that never started) is retried as ``retries`` says.

Params (editable per run; no code edit to repoint): ``databricks_conn_id``, ``existing_cluster_id`` (empty: a
new job cluster from ``new_cluster``), ``new_cluster``, ``python_file``, ``wheel``, ``lake_url`` (an ``s3://``
lake the cluster can reach), ``max_quarantine_share``. Schedule, retries and catch-up as ``pinpipe_daily``; every
task has an ``execution_timeout`` (the cluster run its own ``timeout_seconds``); the ``batch`` task's ``outlets``
are the gold tables as Assets, named as in ``pinpipe_daily``; a manual run without a data interval submits the
batch job with no interval and gates the latest batch run.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task
from airflow.sdk.exceptions import AirflowFailException

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

LTS_RUNTIMES = ("15.4.x-scala2.12", "16.4.x-scala2.12")
"""Databricks Runtime LTS versions pinpipe is written for (Spark 3.5; PySpark 3.5 is tested here)."""

DEFAULT_NEW_CLUSTER: dict[str, Any] = {
    "spark_version": LTS_RUNTIMES[0],
    "node_type_id": "i3.xlarge",
    "num_workers": 1,
    "data_security_mode": "SINGLE_USER",
}

VERSION = "0.1.0"
DEFAULT_WHEEL = f"/Volumes/main/pinpipe/artifacts/pinpipe-{VERSION}-py3-none-any.whl"
DEFAULT_PYTHON_FILE = "/Workspace/Shared/pinpipe/databricks_task.py"

FINAL_EXIT_CODES = {2: "configuration error", 3: "accounting error", 65: "fatal data or state error"}
"""pinpipe exit codes that a retry cannot fix (as in ``pinpipe_daily``): the task fails without retries."""

_EXIT = re.compile(r"pinpipe-exit (\d+)\b")


def exit_code_in(text: str) -> int | None:
    """The exit code of the ``pinpipe-exit <code> <class>: …`` error in a failed run's text (the last one), None
    if there is none (the same reading as ``pinpipe.databricks_task.exit_code_in``: this file imports no
    pinpipe)."""
    found = _EXIT.findall(text)
    return int(found[-1]) if found else None


def raise_for_run_error(task_id: str, exc: BaseException) -> None:
    """Re-raise a failed run's error: as AirflowFailException (no retry) when pinpipe reported a
    :data:`FINAL_EXIT_CODES` exit, else unchanged (Airflow retries it)."""
    code = exit_code_in(str(exc))
    if code in FINAL_EXIT_CODES:
        raise AirflowFailException(
            f"{task_id}: pinpipe on Databricks failed: {FINAL_EXIT_CODES[code]} (exit {code}); not retried — {exc}"
        ) from exc
    raise exc


class PinpipeSubmitRun(DatabricksSubmitRunOperator):
    """``DatabricksSubmitRunOperator`` whose failures are classed by pinpipe's exit code
    (:func:`raise_for_run_error`)."""

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowFailException:
            raise
        except Exception as exc:
            raise_for_run_error(self.task_id, exc)


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
            DEFAULT_PYTHON_FILE, type="string", description="pinpipe's Databricks entry point (a workspace file)"
        ),
        "wheel": Param(DEFAULT_WHEEL, type="string", description="the pinpipe wheel on a Unity Catalog volume"),
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

    batch = PinpipeSubmitRun(
        task_id="batch",
        json=batch_spec(),
        databricks_conn_id="{{ params.databricks_conn_id }}",
        polling_period_seconds=30,
        execution_timeout=RUN_TIMEOUT + TASK_MARGIN,
        outlets=GOLD_ASSETS,
    )
    quality = PinpipeSubmitRun(
        task_id="quality",
        json=quality_spec(),
        databricks_conn_id="{{ params.databricks_conn_id }}",
        polling_period_seconds=30,
        execution_timeout=RUN_TIMEOUT + TASK_MARGIN,
    )
    batch >> quality
