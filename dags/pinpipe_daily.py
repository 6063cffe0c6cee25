"""Airflow 3 DAG ``pinpipe_daily``: land → batch → data-quality gate → report, once a day.

Thin on purpose: every task runs one ``pinpipe`` command as a subprocess, so pinpipe's exit codes carry straight
into Airflow's retry semantics and its log lines stream into the task log. Airflow lives in its own virtualenv
(it caps FastAPI below pinpipe's), so the DAG never imports pinpipe and this file can be deployed alone (git-sync,
a Kubernetes image): nothing here depends on where the file lies. The tasks call, in order:

1. ``pinpipe sink --until-idle``       land everything the event log holds that the lake does not yet have;
2. ``pinpipe batch --interval-start {{ data_interval_start }} --interval-end {{ data_interval_end }}``
                                        landing → silver → gold, incremental (a missed or repeated run neither
                                        loses nor doubles data); the interval is recorded with the run. Its
                                        ``outlets`` are the nine gold tables as Assets (``pinpipe_gold_<table>``),
                                        so downstream DAGs can be scheduled on them;
3. ``pinpipe quality ...``              fails the DAG run if the batch run's accounting does not balance or its
                                        quarantine share exceeds ``max_quarantine_share`` — or if it read no
                                        record, unless ``allow_empty`` (``--allow-empty``);
4. ``pinpipe report --out ...``         the HTML report of the gold tables.

Schedule: daily over the previous day's data interval ``[D, D+1)`` (a ``CronDataIntervalTimetable``, because a
bare ``"@daily"`` in Airflow 3 gives an empty interval), retries 3, 2 minutes apart, no catch-up — as the
original DAG. A manual run without a data interval (``airflow dags trigger`` in Airflow 3) runs the batch job with
no interval recorded, gates the latest batch run and names its report after the run's time.

Configuration, first match wins: the run's **Params** (``airflow dags trigger -c '{"lake_url": ...}'`` or the UI)
→ **Airflow Variables** ``pinpipe_<param>`` (``airflow variables set pinpipe_executable /opt/pinpipe/bin/pinpipe``
or the environment variable ``AIRFLOW_VAR_PINPIPE_EXECUTABLE``) → the defaults below:

- ``executable``: the pinpipe command (default ``pinpipe``, looked up on the worker's ``PATH``);
- ``workdir``: where the commands run (default ``~/pinpipe`` on the worker); relative locations such as
  ``file://pinpipe-data/lake`` resolve there and a ``pinpipe.toml`` there is read;
- ``lake_url``, ``log_url``, ``engine``, ``prefix``: passed as ``PINPIPE__…`` variables; empty = pinpipe's own
  settings (``pinpipe.toml``, the environment, defaults);
- ``max_quarantine_share`` (0.05), ``allow_empty`` (false: a day that brought no record fails the quality
  gate; true passes it), ``report_dir`` (``pinpipe-data/reports``, relative to ``workdir``);
- ``aws_conn_id`` (default ``pinpipe_lake``): an AWS Connection for an ``s3://`` lake, read with the Amazon
  provider's ``AwsBaseHook`` when the task starts — static keys (login/password), temporary keys (extra
  ``aws_session_token``), an assumed role (extra ``role_arn``, ``assume_role_kwargs``), a profile: whatever the
  hook resolves. Its frozen credentials reach pinpipe as ``PINPIPE__LAKE__ACCESS_KEY_ID``/``SECRET_ACCESS_KEY``/
  ``SESSION_TOKEN`` (masked in the task log), and the extra's ``region_name``/``endpoint_url`` as
  ``PINPIPE__LAKE__REGION``/``ENDPOINT`` unless the worker's environment sets those. No such Connection (or a
  lake that is not ``s3://``): nothing is set, so pinpipe's own settings or the worker's AWS chain (instance
  role, ``AWS_*`` variables) apply. Temporary credentials are not refreshed while a task runs: an assumed role's
  session must outlast the task (``assume_role_kwargs: {"DurationSeconds": ...}``; ``batch`` may take 3 h).

Exit codes: 2 (configuration), 3 (accounting: records lost or doubled) and 65 (fatal data or state error, e.g. a
corrupt log or table, or a quality gate over its threshold) fail the task at once — retrying cannot help; 75 (a
service was unavailable) and anything else are retried. Every task has an ``execution_timeout``
(:data:`TIMEOUTS`): on timeout the command gets SIGTERM (the sink then lands and commits what it holds), then
SIGKILL after 30 s.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, BaseHook, CronDataIntervalTimetable, Param, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
from airflow.sdk.log import mask_secret

DEFAULTS: dict[str, Any] = {"executable": "pinpipe", "workdir": "~/pinpipe", "aws_conn_id": "pinpipe_lake"}
"""Defaults of the Params whose Param default is empty, used when no Airflow Variable ``pinpipe_<name>`` is set."""

FINAL_EXIT_CODES = {2: "configuration error", 3: "accounting error", 65: "fatal data or state error"}
"""pinpipe exit codes that a retry cannot fix (SPEC §8; ``pinpipe.errors``): the task fails without retries."""

TIMEOUTS = {
    "land": timedelta(hours=2),
    "batch": timedelta(hours=3),
    "quality": timedelta(minutes=15),
    "report": timedelta(minutes=30),
}
"""``execution_timeout`` per task (``sink --until-idle`` never ends while data keeps arriving)."""

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
"""The gold tables as Assets: ``@dag(schedule=[Asset.ref(name="pinpipe_gold_top_category_by_country")])``."""

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


def setting(params: dict[str, Any], name: str) -> Any:
    """A Param's value if set for this run, else the Airflow Variable ``pinpipe_<name>``, else its default."""
    value = params.get(name)
    if value not in (None, ""):
        return value
    found = Variable.get(f"pinpipe_{name}", default=None)
    return found if found not in (None, "") else DEFAULTS.get(name, "")


def settings_env(params: dict[str, Any]) -> dict[str, str]:
    """``PINPIPE__…`` variables for the non-empty setting Params and the lake's AWS Connection (:func:`aws_env`)."""
    env = {var: str(value) for name, var in _SETTING_PARAMS.items() if (value := setting(params, name))}
    return {**env, **aws_env(str(setting(params, "aws_conn_id")), env.get("PINPIPE__LAKE__URL"))}


def aws_env(conn_id: str, lake_url: str | None) -> dict[str, str]:
    """The lake's credentials from the AWS Connection ``conn_id`` through ``AwsBaseHook``, as ``PINPIPE__LAKE__…``
    variables; nothing if no Connection is named or exists, or if the lake (``lake_url``, else the worker's
    ``PINPIPE__LAKE__URL``) is known not to be ``s3://``. Called by :func:`run_pinpipe` when a task starts (never
    when the file is parsed); the secret key and the token are masked in the task log from then on."""
    lake_url = lake_url or os.environ.get("PINPIPE__LAKE__URL", "")
    if not conn_id or (lake_url and not lake_url.startswith("s3://")):
        return {}
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        print(f"no AWS Connection {conn_id!r}: the lake's credentials are pinpipe's own settings or the worker's")
        return {}
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    except ImportError as exc:
        raise AirflowFailException(
            f"the AWS Connection {conn_id!r} needs the Amazon provider: pip install apache-airflow-providers-amazon"
        ) from exc
    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    try:
        creds = hook.get_credentials()
    except AttributeError as exc:  # boto3 found no credentials at all (its session returned None)
        raise AirflowFailException(f"the AWS Connection {conn_id!r} yields no credentials") from exc
    mask_secret(creds.access_key)
    env = {"PINPIPE__LAKE__ACCESS_KEY_ID": creds.access_key, "PINPIPE__LAKE__SECRET_ACCESS_KEY": creds.secret_key}
    if creds.token:
        env["PINPIPE__LAKE__SESSION_TOKEN"] = creds.token
    config = hook.conn_config
    for var, value in (
        ("PINPIPE__LAKE__REGION", config.region_name),
        ("PINPIPE__LAKE__ENDPOINT", config.get_service_endpoint_url("s3")),
    ):
        if value and not os.environ.get(var):
            env[var] = str(value)
    print(
        f"lake credentials: AWS Connection {conn_id!r}" + (" (temporary, with a session token)" if creds.token else "")
    )
    return env


def raise_for_exit(argv: list[str], code: int) -> None:
    """Nothing for 0; AirflowFailException (no retry) for :data:`FINAL_EXIT_CODES`; AirflowException otherwise."""
    if code == 0:
        return
    if code in FINAL_EXIT_CODES:
        raise AirflowFailException(f"`{shlex.join(argv)}` failed: {FINAL_EXIT_CODES[code]} (exit {code}); not retried")
    raise AirflowException(f"`{shlex.join(argv)}` exited with code {code}; will be retried")


def interval_args(start: datetime | None, end: datetime | None) -> list[str]:
    """``--interval-start S --interval-end E``, or nothing for a run without a data interval."""
    if start is None or end is None:
        return []
    return ["--interval-start", start.isoformat(), "--interval-end", end.isoformat()]


def run_pinpipe(*args: str) -> str:
    """Run ``pinpipe ARGS`` in the working directory, stream its output to the task log, return the last lines.

    If the task is stopped (its ``execution_timeout``, a kill from the UI), the command gets SIGTERM, then SIGKILL."""
    params = get_current_context()["params"]
    executable = str(setting(params, "executable"))
    resolved = shutil.which(executable) if os.sep not in executable else executable
    if resolved is None or not Path(resolved).exists():
        raise AirflowFailException(
            f"the pinpipe command {executable!r} is not on this worker's PATH — set the 'executable' Param or the "
            "Airflow Variable pinpipe_executable to the pinpipe of pinpipe's virtualenv"
        )
    argv = [resolved, *args]
    workdir = Path(str(setting(params, "workdir"))).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(params)}
    print(f"$ {shlex.join(argv)}   (in {workdir})", flush=True)
    proc = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line.rstrip("\n"), flush=True)
            tail = [*tail[-19:], line.rstrip("\n")]
        code = proc.wait()
    finally:
        if proc.poll() is None:  # the task was stopped while the command ran
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise_for_exit(argv, code)
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
        "executable": Param("", type="string", description="pinpipe command (empty: Variable, else `pinpipe`)"),
        "workdir": Param("", type="string", description="directory the commands run in (empty: ~/pinpipe)"),
        "lake_url": Param("", type="string", description="lake URL (empty: pinpipe's own settings)"),
        "log_url": Param("", type="string", description="event log URL (empty: pinpipe's own settings)"),
        "engine": Param("", enum=["", "duckdb", "spark"], description="batch engine (empty: pinpipe's setting)"),
        "prefix": Param("", type="string", description="topic prefix (empty: pinpipe's setting)"),
        "aws_conn_id": Param(
            "", type="string", description="AWS Connection for an s3 lake (empty: Variable, else `pinpipe_lake`)"
        ),
        "max_quarantine_share": Param(
            0.05, type="number", minimum=0, maximum=1, description="fail if more of a batch run is quarantined"
        ),
        "allow_empty": Param(False, type="boolean", description="pass the quality gate when no record arrived"),
        "report_dir": Param("pinpipe-data/reports", type="string", description="where reports are written"),
    },
) as dag:

    @task(execution_timeout=TIMEOUTS["land"])
    def land() -> str:
        """Land everything the event log holds (the sink stops once it is idle)."""
        return run_pinpipe("sink", "--until-idle")

    @task(execution_timeout=TIMEOUTS["batch"], outlets=GOLD_ASSETS)
    def batch(data_interval_start: Any = None, data_interval_end: Any = None) -> str:
        """Clean every landed object not processed before into silver, then rebuild gold."""
        return run_pinpipe("batch", *interval_args(data_interval_start, data_interval_end))

    @task(execution_timeout=TIMEOUTS["quality"])
    def quality(data_interval_start: Any = None, data_interval_end: Any = None, params: Any = None) -> str:
        """Fail the run if the batch run's accounting does not balance, too much of it was quarantined or (unless
        ``allow_empty``) it read no record."""
        share = str(setting(params, "max_quarantine_share"))
        empty = ["--allow-empty"] if params.get("allow_empty") is True else []
        return run_pinpipe(
            "quality", "--max-quarantine-share", share, *empty, *interval_args(data_interval_start, data_interval_end)
        )

    @task(execution_timeout=TIMEOUTS["report"])
    def report(data_interval_start: Any = None, dag_run: Any = None, params: Any = None) -> str:
        """Write the HTML report to ``<report_dir>/pinpipe-<interval start date>.html`` (a run without an
        interval: ``pinpipe-<run time>.html``)."""
        stamp = f"{data_interval_start:%Y-%m-%d}" if data_interval_start else f"{dag_run.run_after:%Y-%m-%dT%H%M%S}"
        out = Path(str(setting(params, "report_dir"))) / f"pinpipe-{stamp}.html"
        return run_pinpipe("report", "--out", str(out))

    land() >> batch() >> quality() >> report()


if __name__ == "__main__":
    dag.test()
