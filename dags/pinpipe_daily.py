"""Airflow 3 DAG ``pinpipe_daily``: land → batch → data-quality gate → report, once a day.

Thin on purpose: every task is a :class:`PinpipeOperator`, which runs one ``pinpipe`` command through Airflow's
``SubprocessHook``, so pinpipe's exit codes carry straight into Airflow's retry semantics and its log lines stream
into the task log. (A command, not ``@task.external_python``: the exit code is pinpipe's verdict — configuration,
accounting, data error, a service down — and it survives the process boundary where an exception's class would
not, while the sink and the report are commands with their own signal handling.) Airflow lives in its own virtualenv
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
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import DAG, Asset, BaseHook, BaseOperator, Context, CronDataIntervalTimetable, Param, Variable
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
    ``PINPIPE__LAKE__URL``) is known not to be ``s3://``. Called by :meth:`PinpipeOperator.execute` when a task
    starts (never when the file is parsed); the secret key and the token are masked in the task log from then on."""
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


def resolve_executable(params: dict[str, Any]) -> str:
    """The pinpipe command's path on this worker (the ``executable`` setting, looked up on ``PATH`` when it is a
    bare name); AirflowFailException when there is none — a retry cannot make it appear."""
    executable = str(setting(params, "executable"))
    resolved = shutil.which(executable) if os.sep not in executable else executable
    if resolved is None or not Path(resolved).exists():
        raise AirflowFailException(
            f"the pinpipe command {executable!r} is not on this worker's PATH — set the 'executable' Param or the "
            "Airflow Variable pinpipe_executable to the pinpipe of pinpipe's virtualenv"
        )
    return resolved


class PinpipeOperator(BaseOperator):
    """Runs one ``pinpipe`` command, ``arguments(context)``, through Airflow's ``SubprocessHook`` (as the
    ``BashOperator`` does, without a shell): in the ``workdir`` setting, with the :func:`settings_env` variables;
    its output streams into the task log and its last line is the task's XCom. The exit code decides the task's
    fate (:func:`raise_for_exit`). If the task is stopped — its ``execution_timeout``, a kill from the UI, the
    worker's shutdown — :meth:`on_kill` sends the command's process group SIGTERM (the sink then lands and
    commits what it holds), then SIGKILL after :attr:`kill_grace`."""

    ui_color = "#e8f1fb"
    kill_grace = timedelta(seconds=30)

    def __init__(self, *, arguments: Callable[[Context], list[str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arguments = arguments

    @cached_property
    def hook(self) -> SubprocessHook:
        return SubprocessHook()

    def execute(self, context: Context) -> str:
        params = context["params"]
        argv = [resolve_executable(params), *self.arguments(context)]
        workdir = Path(str(setting(params, "workdir"))).expanduser()
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(params)}
        self.log.info("$ %s   (in %s)", shlex.join(argv), workdir)
        result = self.hook.run_command(argv, env=env, cwd=str(workdir))
        raise_for_exit(argv, result.exit_code)
        return str(result.output)

    def on_kill(self) -> None:
        proc = self.hook.sub_process
        if proc is None or proc.poll() is not None:
            return
        self.hook.send_sigterm()
        try:
            proc.wait(self.kill_grace.total_seconds())
        except subprocess.TimeoutExpired:
            self.log.warning("the command did not stop within %s of SIGTERM: SIGKILL", self.kill_grace)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def land_arguments(context: Context) -> list[str]:
    """Land everything the event log holds (the sink stops once it is idle)."""
    return ["sink", "--until-idle"]


def batch_arguments(context: Context) -> list[str]:
    """Clean every landed object not processed before into silver, then rebuild gold."""
    return ["batch", *interval_args(context.get("data_interval_start"), context.get("data_interval_end"))]


def quality_arguments(context: Context) -> list[str]:
    """Fail the run if the batch run's accounting does not balance, too much of it was quarantined or (unless
    ``allow_empty``) it read no record."""
    params = context["params"]
    share = str(setting(params, "max_quarantine_share"))
    empty = ["--allow-empty"] if params.get("allow_empty") is True else []
    interval = interval_args(context.get("data_interval_start"), context.get("data_interval_end"))
    return ["quality", "--max-quarantine-share", share, *empty, *interval]


def report_arguments(context: Context) -> list[str]:
    """Write the HTML report to ``<report_dir>/pinpipe-<interval start date>.html`` (a run without an interval:
    ``pinpipe-<run time>.html``)."""
    start = context.get("data_interval_start")
    stamp = f"{start:%Y-%m-%d}" if start else f"{context['dag_run'].run_after:%Y-%m-%dT%H%M%S}"
    out = Path(str(setting(context["params"], "report_dir"))) / f"pinpipe-{stamp}.html"
    return ["report", "--out", str(out)]


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
    land = PinpipeOperator(task_id="land", arguments=land_arguments, execution_timeout=TIMEOUTS["land"])
    batch = PinpipeOperator(
        task_id="batch", arguments=batch_arguments, execution_timeout=TIMEOUTS["batch"], outlets=GOLD_ASSETS
    )
    quality = PinpipeOperator(task_id="quality", arguments=quality_arguments, execution_timeout=TIMEOUTS["quality"])
    report = PinpipeOperator(task_id="report", arguments=report_arguments, execution_timeout=TIMEOUTS["report"])
    land >> batch >> quality >> report


if __name__ == "__main__":
    dag.test()
