"""The Airflow DAGs in ``dags/``, loaded and run by real Airflow 3 in its own virtualenv (``.venv-airflow``).

Airflow cannot be imported here (it pins FastAPI below pinpipe's), so each check runs a short script with
``.venv-airflow/bin/python`` in a scratch ``AIRFLOW_HOME`` (``tests.fixtures.airflow``) and reads one JSON line
back. The end-to-end test prepares a working directory the way a deployment would (source database,
API, emulated traffic) and lets ``dag.test()`` land, batch, gate and report through the real ``pinpipe`` CLI.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.airflow import DAG_TEST, AirflowHome, airflow_home, deployed_dag
from tests.fixtures.services import free_port, start, venv_bin

__all__ = ["airflow_home"]  # the fixture, imported for pytest

pytestmark = pytest.mark.integration

FACTS = """
import importlib.util
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for d in bag.dags.values():
    out["dags"][d.dag_id] = {
        "timetable": type(d.timetable).__name__,
        "cron": d.timetable.expression,
        "catchup": d.catchup,
        "tasks": {t.task_id: [type(t).__name__, t.retries, t.retry_delay.total_seconds()] for t in d.tasks},
        "timeouts": {t.task_id: t.execution_timeout and t.execution_timeout.total_seconds() for t in d.tasks},
        "outlets": {t.task_id: sorted(a.name for a in t.outlets) for t in d.tasks},
        "params": sorted(d.params.keys()),
    }
def module(dag):
    spec = importlib.util.spec_from_file_location(dag.dag_id + "_module", dag.fileloc)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
dbx = bag.dags["pinpipe_databricks"]
mod = module(dbx)
params = {k: dbx.params[k] for k in dbx.params.keys()}
out["databricks"] = {
    "new": mod.run_spec(params, "pinpipe batch", ["batch", "--engine", "spark"]),
    "existing": mod.run_spec({**params, "existing_cluster_id": "1108-162752-8okw8dgg"}, "x", ["batch"]),
    "conn_ids": {t.task_id: getattr(t, "databricks_conn_id", None) for t in dbx.tasks},
}
daily = module(bag.dags["pinpipe_daily"])
exits = {}
for code in (0, 1, 2, 3, 65, 75, -9):
    try:
        daily.raise_for_exit(["pinpipe", "batch"], code)
        exits[code] = None
    except Exception as exc:
        exits[code] = type(exc).__name__
out["exits"] = exits
emit(out)
"""


@pytest.fixture(scope="module")
def dag_facts(airflow_home: AirflowHome) -> dict[str, Any]:
    """What a DagBag of ``dags/`` holds, loaded once by Airflow itself."""
    facts: dict[str, Any] = airflow_home.run(FACTS)
    return facts


def test_every_dag_imports_without_errors(dag_facts: dict[str, Any]) -> None:
    assert dag_facts["errors"] == {}
    tasks = {dag_id: sorted(dag["tasks"]) for dag_id, dag in dag_facts["dags"].items()}
    assert tasks == {
        "pinpipe_daily": ["batch", "land", "quality", "report"],
        "pinpipe_databricks": ["batch", "batch_spec", "quality", "quality_spec"],
    }


def test_the_daily_tasks_are_pinpipe_operators(dag_facts: dict[str, Any]) -> None:
    """Each task of ``pinpipe_daily`` runs its command through the DAG's operator (Airflow's SubprocessHook)."""
    assert {task: facts[0] for task, facts in dag_facts["dags"]["pinpipe_daily"]["tasks"].items()} == dict.fromkeys(
        ("batch", "land", "quality", "report"), "PinpipeOperator"
    )


def test_schedule_retries_and_catchup_match_the_original(dag_facts: dict[str, Any]) -> None:
    for dag_id, dag in dag_facts["dags"].items():
        assert dag["timetable"] == "CronDataIntervalTimetable", dag_id  # [D, D+1): "@daily" would be empty
        assert dag["cron"] == "0 0 * * *"
        assert dag["catchup"] is False
        assert all(task[1:] == [3, 120.0] for task in dag["tasks"].values()), dag["tasks"]
    daily, dbx = dag_facts["dags"]["pinpipe_daily"], dag_facts["dags"]["pinpipe_databricks"]
    expected = {"executable", "workdir", "lake_url", "log_url", "engine", "max_quarantine_share", "allow_empty"}
    assert expected | {"aws_conn_id"} <= set(daily["params"])
    assert {"databricks_conn_id", "existing_cluster_id", "new_cluster", "lake_url"} <= set(dbx["params"])


def test_every_task_has_a_timeout_and_batch_declares_the_gold_assets(dag_facts: dict[str, Any]) -> None:
    from pinpipe.batch.gold import GOLD_TABLES

    for dag_id, dag in dag_facts["dags"].items():
        assert all(seconds and seconds > 0 for seconds in dag["timeouts"].values()), (dag_id, dag["timeouts"])
        assert dag["outlets"]["batch"] == sorted(f"pinpipe_gold_{name}" for name in GOLD_TABLES), dag_id
        assert all(not names for task, names in dag["outlets"].items() if task != "batch")


def test_exit_65_fails_at_once_and_75_is_retried(dag_facts: dict[str, Any]) -> None:
    assert dag_facts["exits"] == {
        "0": None,
        "1": "AirflowException",  # a bug or a crash: retried, it may be transient
        "2": "AirflowFailException",
        "3": "AirflowFailException",
        "65": "AirflowFailException",
        "75": "AirflowException",
        "-9": "AirflowException",  # killed (OOM): retried
    }


def test_databricks_variant_submits_the_spark_batch_entry_point(dag_facts: dict[str, Any]) -> None:
    dbx = dag_facts["databricks"]
    ops = dag_facts["dags"]["pinpipe_databricks"]["tasks"]
    assert ops["batch"][0] == ops["quality"][0] == "PinpipeSubmitRun"  # a DatabricksSubmitRunOperator
    assert dbx["conn_ids"]["batch"] == "{{ params.databricks_conn_id }}"
    new = dbx["new"]
    assert new["spark_python_task"]["parameters"] == ["batch", "--engine", "spark"]
    assert new["spark_python_task"]["python_file"].endswith(".py")
    assert new["libraries"][0]["whl"].endswith(".whl")
    assert "new_cluster" in new and "existing_cluster_id" not in new
    assert dbx["existing"]["existing_cluster_id"] == "1108-162752-8okw8dgg"
    assert "new_cluster" not in dbx["existing"]


def _fake_pinpipe(folder: Path, fail: dict[str, int]) -> Path:
    """A stand-in ``pinpipe`` that records its arguments in ``calls.txt`` (in its working directory) and exits
    with ``fail[command]`` for the commands named there."""
    fake = folder / "pinpipe"
    cases = "".join(
        f'if [ "$1" = {cmd} ]; then echo "{cmd} failed" >&2; exit {code}; fi\n' for cmd, code in fail.items()
    )
    fake.write_text('#!/bin/sh\necho "$@" >> calls.txt\n' + cases)
    fake.chmod(0o755)
    return fake


def test_a_failed_quality_gate_fails_the_run_at_once(airflow_home: AirflowHome, tmp_path: Path) -> None:
    fake = _fake_pinpipe(tmp_path, {"quality": 3})
    conf = {"executable": str(fake), "workdir": str(tmp_path), "lake_url": "file://lake"}
    result = airflow_home.run(f"CONF = {conf!r}\nSCHEDULED = True\n" + DAG_TEST)
    assert result["state"] == "failed"
    assert result["tasks"]["land"][0] == "success"
    assert result["tasks"]["batch"][0] == "success"
    assert result["tasks"]["quality"] == ["failed", 1]  # exit 3: no retry can fix it
    assert result["tasks"]["report"][0] == "upstream_failed"
    start, end = result["interval"]
    start, end = start.replace(" ", "T"), end.replace(" ", "T")
    assert start.endswith("T00:00:00+00:00") and end.endswith("T00:00:00+00:00") and start < end
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0] == "sink --until-idle"
    assert calls[1] == f"batch --interval-start {start} --interval-end {end}"
    assert calls[2].startswith("quality --max-quarantine-share 0.05 --interval-start")


def test_allow_empty_passes_the_quality_gate_its_flag(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """``allow_empty`` true: the gate runs ``pinpipe quality --allow-empty`` (a day without records passes)."""
    fake = _fake_pinpipe(tmp_path, {})
    conf = {"executable": str(fake), "workdir": str(tmp_path), "allow_empty": True}
    result = airflow_home.run(f"CONF = {conf!r}\nSCHEDULED = False\n" + DAG_TEST)
    assert result["state"] == "success", result
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[2] == "quality --max-quarantine-share 0.05 --allow-empty"


def test_a_fatal_data_error_fails_the_batch_task_without_retries(airflow_home: AirflowHome, tmp_path: Path) -> None:
    fake = _fake_pinpipe(tmp_path, {"batch": 65})
    conf = {"executable": str(fake), "workdir": str(tmp_path)}
    result = airflow_home.run(f"CONF = {conf!r}\nSCHEDULED = True\n" + DAG_TEST)
    assert result["state"] == "failed"
    assert result["tasks"]["batch"] == ["failed", 1]
    assert result["tasks"]["quality"][0] == "upstream_failed"
    assert result["assets"] == []  # a failed batch announces no gold


def test_a_manual_run_without_a_data_interval_from_a_dag_deployed_alone(
    airflow_home: AirflowHome, tmp_path: Path
) -> None:
    """No Param set: the executable and the working directory come from Airflow Variables; the DAG file is not
    in a checkout; the run has no data interval."""
    fake = _fake_pinpipe(tmp_path, {})
    work = tmp_path / "work"
    variables = {"pinpipe_executable": str(fake), "pinpipe_workdir": str(work)}
    result = airflow_home.run(
        "CONF = {}\nSCHEDULED = False\n" + DAG_TEST, dag_folder=deployed_dag(tmp_path), variables=variables
    )
    assert result["fileloc"].startswith(str(tmp_path / "deployed-dags"))
    assert result["state"] == "success", result
    assert result["run_type"].lower().endswith("manual")
    assert result["interval"] == ["None", "None"]
    calls = (work / "calls.txt").read_text().splitlines()
    assert calls[:3] == ["sink --until-idle", "batch", "quality --max-quarantine-share 0.05"]
    assert calls[3].startswith("report --out pinpipe-data/reports/pinpipe-") and calls[3].endswith(".html")
    assert len(result["assets"]) == 9


def _land_timing_out(airflow_home: AirflowHome, tmp_path: Path, script: str, *edits: tuple[str, str]) -> dict[str, Any]:
    """A scheduled run of the DAG deployed alone with a 3-second ``land`` timeout, no retries and ``edits``, its
    ``pinpipe`` the shell ``script`` (run in ``tmp_path``): the run's result, which must come within 100 s."""
    folder = deployed_dag(tmp_path)
    dag_file = folder / "pinpipe_daily.py"
    text = dag_file.read_text()
    for old, new in (
        ('"land": timedelta(hours=2)', '"land": timedelta(seconds=3)'),
        ('"retries": 3', '"retries": 0'),
        *edits,
    ):
        assert old in text
        text = text.replace(old, new)
    dag_file.write_text(text)
    fake = tmp_path / "pinpipe"
    fake.write_text(script)
    fake.chmod(0o755)
    started = time.monotonic()
    result: dict[str, Any] = airflow_home.run(
        "CONF = {}\nSCHEDULED = True\n" + DAG_TEST,
        dag_folder=folder,
        variables={"pinpipe_executable": str(fake), "pinpipe_workdir": str(tmp_path)},
    )
    assert time.monotonic() - started < 100
    assert result["tasks"]["land"] == ["failed", 1]
    return result


def test_a_task_over_its_timeout_stops_its_command(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """A deployment with a 3-second ``land`` timeout (and no retries) and a sink that never goes idle: the task
    fails on its ``execution_timeout`` and the command gets SIGTERM (the real sink then commits what it holds)."""
    script = "#!/bin/sh\necho \"$@\" >> calls.txt\nsleep 120 &\ntrap 'kill $!; echo terminated >> calls.txt; exit 0' TERM\nwait\n"
    result = _land_timing_out(airflow_home, tmp_path, script)
    assert result["tasks"]["batch"][0] == "upstream_failed"
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["sink --until-idle", "terminated"]


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """The same timeout with a command that ignores SIGTERM (and a 2-second grace): the operator kills its process
    group, so neither the command nor the child it started outlives the task."""
    script = "#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho $$ $! > pids.txt\nwait\nwait\n"
    grace = ("kill_grace = timedelta(seconds=30)", "kill_grace = timedelta(seconds=2)")
    _land_timing_out(airflow_home, tmp_path, script, grace)
    pids = [int(pid) for pid in (tmp_path / "pids.txt").read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running after the task failed: {pids}"
        time.sleep(0.2)


def _state(pid: int) -> str:
    """The process state letter of ``pid`` ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def test_the_daily_dag_lands_batches_gates_and_reports_end_to_end(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """A prepared deployment (source database, API, emulated traffic in both dialects), then ``dag.test()`` of
    the DAG file copied outside the checkout, configured only through Airflow Variables."""
    work = tmp_path / "work"
    work.mkdir()
    db, log, lake = f"sqlite:///{work / 'source.db'}", f"file://{work / 'log'}", f"file://{work / 'lake'}"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    pinpipe = venv_bin("pinpipe")
    subprocess.run([pinpipe, "source", "init", "--db", db], cwd=work, env=env, check=True, capture_output=True)
    port = free_port()
    api = start("api", [pinpipe, "api", "--port", str(port), "--log", log], port, work, env=env, timeout=60)
    try:
        for dialect in ("batch", "stream"):
            emulate = ["emulate", "--dialect", dialect, "--api", api.url, "--db", db, "--count", "200"]
            subprocess.run(
                [pinpipe, *emulate, "--records-per-request", "20", "--send-log", str(work / "send-log.jsonl")],
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
    finally:
        api.stop()

    variables = {
        "pinpipe_executable": pinpipe,
        "pinpipe_workdir": str(work),
        "pinpipe_lake_url": lake,
        "pinpipe_log_url": log,
    }
    result = airflow_home.run(
        "CONF = {}\nSCHEDULED = True\n" + DAG_TEST, timeout=300, dag_folder=deployed_dag(tmp_path), variables=variables
    )
    assert result["state"] == "success", result
    assert {task: state for task, (state, _) in result["tasks"].items()} == dict.fromkeys(
        ("land", "batch", "quality", "report"), "success"
    )
    gold = sorted(p.name for p in (work / "lake" / "gold").iterdir() if (p / "_delta_log").is_dir())
    assert len(gold) == 9 and "top_category_by_country" in gold
    assert result["assets"] == sorted(f"pinpipe_gold_{name}" for name in gold)
    reports = list((work / "pinpipe-data" / "reports").glob("pinpipe-*.html"))
    assert len(reports) == 1 and reports[0].name == f"pinpipe-{result['interval'][0][:10]}.html"
    assert reports[0].stat().st_size > 1000
