"""Airflow 3 DAG ``pinpipe_daily``: land → batch → data-quality gate → report, once a day.

Thin on purpose: every task runs one ``pinpipe`` command as a subprocess. Airflow lives in its own virtualenv
(``make airflow`` builds ``.venv-airflow``; it caps FastAPI below pinpipe's), so the DAG never imports pinpipe.
The scheduler parses this file; the tasks below call, in order:

1. ``pinpipe sink --until-idle``       land everything the event log holds that the lake does not yet have;
2. ``pinpipe batch --interval-start {{ data_interval_start }} --interval-end {{ data_interval_end }}``
                                        landing → silver → gold, incremental (a missed or repeated run neither
                                        loses nor doubles data); the interval is recorded with the run;
3. ``pinpipe quality ...``              fails the DAG run if the batch run's accounting does not balance or its
                                        quarantine share exceeds ``max_quarantine_share``;
4. ``pinpipe report --out ...``         the HTML report of the gold tables.

Schedule: daily over the previous day's data interval ``[D, D+1)`` (a ``CronDataIntervalTimetable``, because a
bare ``"@daily"`` in Airflow 3 gives an empty interval), retries 3, 2 minutes apart, no catch-up — as the
original DAG. Everything that differs between installations is a **Param** (editable per run in the UI, or with
``airflow dags trigger -c '{"lake_url": ...}'``) or a **Connection**, so repointing it needs no code edit:

- ``pinpipe``: the pinpipe executable (default: ``.venv/bin/pinpipe`` of the checkout holding this folder);
- ``workdir``: where the commands run (relative paths such as ``file://pinpipe-data/lake`` resolve there, and
  a ``pinpipe.toml`` there is read);
- ``lake_url``, ``log_url``, ``engine``, ``prefix``: passed as ``PINPIPE__…`` variables; empty = pinpipe's own
  settings (``pinpipe.toml``, the environment, defaults);
- ``max_quarantine_share``, ``report_dir``;
- Connection ``lake_conn_id`` (default ``pinpipe_lake``, optional, AWS type): login/password = S3 access key
  id/secret, extra ``{"endpoint_url": ..., "region_name": ...}``.

Exit codes map to Airflow's retry semantics: pinpipe exits 2 on a configuration error and 3 on an accounting
error — retrying cannot help, so the task fails at once (the quality gate's verdict, exit 1, too); any other
failure (75: a service was unavailable) is retried.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, BaseHook, CronDataIntervalTimetable, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

CHECKOUT = Path(__file__).resolve().parents[1]
"""The pinpipe checkout this file lives in (``<checkout>/dags/pinpipe_daily.py``)."""

_LOCAL_PINPIPE = CHECKOUT / ".venv" / "bin" / "pinpipe"
DEFAULT_PINPIPE = str(_LOCAL_PINPIPE) if _LOCAL_PINPIPE.exists() else "pinpipe"

NO_RETRY_EXIT_CODES = {2: "configuration error", 3: "accounting error"}
"""pinpipe exit codes that a retry cannot fix (see ``pinpipe.errors``)."""

_SETTING_PARAMS = {
    "lake_url": "PINPIPE__LAKE__URL",
    "log_url": "PINPIPE__LOG__URL",
    "engine": "PINPIPE__BATCH__ENGINE",
    "prefix": "PINPIPE__PREFIX",
}

default_args: dict[str, Any] = {
    "owner": "pinpipe",
    "depends_on_past": False,
    "email_on_failure": False,
    "email_on_retry": False,
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
}


def settings_env(params: dict[str, Any]) -> dict[str, str]:
    """``PINPIPE__…`` variables for the non-empty setting Params and the optional lake Connection."""
    env = {var: str(params[name]) for name, var in _SETTING_PARAMS.items() if params.get(name)}
    conn_id = params.get("lake_conn_id")
    if conn_id:
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return env
        if conn.login and conn.password:
            env["PINPIPE__LAKE__ACCESS_KEY_ID"] = conn.login
            env["PINPIPE__LAKE__SECRET_ACCESS_KEY"] = conn.password
        extra = conn.extra_dejson
        if extra.get("endpoint_url"):
            env["PINPIPE__LAKE__ENDPOINT"] = str(extra["endpoint_url"])
        if extra.get("region_name"):
            env["PINPIPE__LAKE__REGION"] = str(extra["region_name"])
    return env


def run_pinpipe(*args: str, final: dict[int, str] = NO_RETRY_EXIT_CODES) -> str:
    """Run ``pinpipe ARGS`` in the ``workdir`` Param, stream its output to the task log, return the last lines.

    An exit code in ``final`` fails the task without retries; any other non-zero code raises for a retry."""
    params = get_current_context()["params"]
    argv = [str(params["pinpipe"]), *args]
    workdir = Path(str(params["workdir"])).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(params)}
    print(f"$ {shlex.join(argv)}   (in {workdir})", flush=True)
    try:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as exc:
        raise AirflowFailException(f"cannot run {argv[0]!r}: {exc} — set the 'pinpipe' Param") from exc
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip("\n"), flush=True)
        tail = [*tail[-19:], line.rstrip("\n")]
    code = proc.wait()
    if code in final:
        raise AirflowFailException(f"`{shlex.join(argv)}` failed: {final[code]} (exit {code})")
    if code != 0:
        raise AirflowException(f"`{shlex.join(argv)}` exited with code {code}")
    return "\n".join(tail)


with DAG(
    dag_id="pinpipe_daily",
    description="Land the event log, run the batch job over the day, gate on data quality, write the report.",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 8, 18, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["pinpipe"],
    params={
        "pinpipe": Param(DEFAULT_PINPIPE, type="string", description="path of the pinpipe executable"),
        "workdir": Param(str(CHECKOUT), type="string", description="directory the commands run in"),
        "lake_url": Param("", type="string", description="lake URL (empty: pinpipe's own settings)"),
        "log_url": Param("", type="string", description="event log URL (empty: pinpipe's own settings)"),
        "engine": Param("", enum=["", "duckdb", "spark"], description="batch engine (empty: pinpipe's setting)"),
        "prefix": Param("", type="string", description="topic prefix (empty: pinpipe's setting)"),
        "lake_conn_id": Param("pinpipe_lake", type="string", description="optional AWS Connection for an s3 lake"),
        "max_quarantine_share": Param(
            0.05, type="number", minimum=0, maximum=1, description="fail if more of a batch run is quarantined"
        ),
        "report_dir": Param("pinpipe-data/reports", type="string", description="where reports are written"),
    },
) as dag:

    @task
    def land() -> str:
        """Land everything the event log holds (the sink stops once it is idle)."""
        return run_pinpipe("sink", "--until-idle")

    @task
    def batch(data_interval_start: Any = None, data_interval_end: Any = None) -> str:
        """Clean every landed object not processed before into silver, then rebuild gold."""
        return run_pinpipe(
            "batch",
            "--interval-start",
            data_interval_start.isoformat(),
            "--interval-end",
            data_interval_end.isoformat(),
        )

    @task
    def quality(data_interval_start: Any = None, data_interval_end: Any = None, params: Any = None) -> str:
        """Fail the run if the batch run's accounting does not balance or too much of it was quarantined."""
        return run_pinpipe(
            "quality",
            "--max-quarantine-share",
            str(params["max_quarantine_share"]),
            "--interval-start",
            data_interval_start.isoformat(),
            "--interval-end",
            data_interval_end.isoformat(),
            final={**NO_RETRY_EXIT_CODES, 1: "quality gate failed"},
        )

    @task
    def report(data_interval_start: Any = None, params: Any = None) -> str:
        """Write the HTML report of the gold tables to ``<report_dir>/pinpipe-<interval start date>.html``."""
        out = Path(str(params["report_dir"])) / f"pinpipe-{data_interval_start:%Y-%m-%d}.html"
        return run_pinpipe("report", "--out", str(out))

    land() >> batch() >> quality() >> report()


if __name__ == "__main__":
    dag.test()
