"""The Databricks variant: the Jobs API payload the DAG submits, the entry point's exit classes, and the DAG
reading them back from a failed run through the Airflow provider's real HTTP client.

There is no Databricks here: the runs are answered by :mod:`tests.fixtures.databricks_api` (a Jobs API 2.2
stand-in on 127.0.0.1). What the entry point prints and raises is the real ``pinpipe.databricks_task`` run as a
process; what the DAG does with it is the real DAG file, loaded and run by Airflow 3 (``.venv-airflow``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pinpipe.databricks_task import EXIT_CLASSES, exit_code_in, failure_message
from pinpipe.lake.store import Lake
from tests.fixtures.batch_lake import land
from tests.fixtures.services import free_port, start
from tests.integration.test_dags import DAG_TEST, AirflowHome, airflow_home

pytestmark = pytest.mark.integration

__all__ = ["airflow_home"]

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _entry(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pinpipe.databricks_task ARGS`` as a Databricks task runs it (this checkout's source)."""
    full = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pinpipe.databricks_task", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full,
        timeout=120,
    )


def _raised(proc: subprocess.CompletedProcess[str]) -> str:
    """The ``PinpipeTaskFailed: …`` line the entry point's uncaught exception printed (what Databricks shows as
    the run's error)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("PinpipeTaskFailed: ")]
    assert lines, proc.stderr[-3000:]
    return lines[-1][len("PinpipeTaskFailed: ") :]


def test_the_entry_point_reports_each_failure_with_its_exit_class(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    land(Lake(f"file://{lake}"), {"pin": [{"index": 1, "title": "a"}], "geo": [{"ind": 1}]})
    assert _entry("batch", "--lake", str(lake), "--no-gold", cwd=tmp_path).returncode == 0
    assert _entry("batch", "--lake", str(lake), "--no-gold", cwd=tmp_path).returncode == 0  # reads nothing new
    gate = _entry("quality", "--lake", str(lake), "--max-quarantine-share", "1", cwd=tmp_path)
    assert gate.returncode != 0
    fatal = _raised(gate)
    assert fatal.startswith("pinpipe-exit 65 fatal: error: run ") and "read no record" in fatal
    typo = _raised(_entry("batch", "--lake", str(tmp_path / "nowhere"), cwd=tmp_path))
    assert typo.startswith("pinpipe-exit 2 usage: error: ")
    master = f"spark://127.0.0.1:{free_port()}"
    down = _entry(
        "batch", "--lake", str(lake), "--engine", "spark", "--spark-master", master,
        cwd=tmp_path, env={"PINPIPE__SPARK__CONNECT_TIMEOUT_S": "1"},
    )  # fmt: skip
    retry = _raised(down)
    assert retry.startswith(f"pinpipe-exit 75 retryable: error: the Spark master {master} did not accept")
    assert [exit_code_in(text) for text in (fatal, typo, retry)] == [65, 2, 75]
    assert exit_code_in(f"run failed with the errors [{{'error': 'PinpipeTaskFailed: {retry}'}}]") == 75
    assert exit_code_in("Cluster terminated: driver unreachable") is None
    assert failure_message(3, "") == "pinpipe-exit 3 accounting" and EXIT_CLASSES[75] == "retryable"


PAYLOAD = """
import importlib.util
dbx = bag.dags["pinpipe_databricks"]
spec = importlib.util.spec_from_file_location("dbx_module", dbx.fileloc)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
params = {k: dbx.params[k] for k in dbx.params.keys()}
classes = {}
for text in TEXTS:
    try:
        mod.raise_for_run_error("batch", RuntimeError(text))
    except Exception as exc:
        classes[text] = type(exc).__name__
emit({
    "spec": mod.run_spec(params, "pinpipe batch", ["batch", "--engine", "spark", "--lake", params["lake_url"]]),
    "lts": list(mod.LTS_RUNTIMES),
    "operators": {t.task_id: [type(t).__name__, [c.__name__ for c in type(t).__mro__]] for t in dbx.tasks},
    "classes": classes,
})
"""


def test_the_payload_installs_the_wheel_from_a_volume_on_an_lts_runtime(airflow_home: AirflowHome) -> None:
    texts = {
        65: "batch failed with the errors [{'error': 'PinpipeTaskFailed: pinpipe-exit 65 fatal: error: bad'}]",
        2: "batch failed with the errors [{'error': 'PinpipeTaskFailed: pinpipe-exit 2 usage: error: no lake'}]",
        3: "batch failed with the errors [{'error': 'PinpipeTaskFailed: pinpipe-exit 3 accounting: lost'}]",
        75: "batch failed with the errors [{'error': 'PinpipeTaskFailed: pinpipe-exit 75 retryable: down'}]",
        1: "batch failed with the errors [{'error': 'PinpipeTaskFailed: pinpipe-exit 1 internal: bug'}]",
        0: "batch failed with terminal state: INTERNAL_ERROR and with the error Cluster did not start",
    }
    facts = airflow_home.run(f"TEXTS = {list(texts.values())!r}\n" + PAYLOAD)
    spec = facts["spec"]
    assert re.fullmatch(r"1[56]\.4\.x-scala2\.12", spec["new_cluster"]["spark_version"])  # an LTS, Spark 3.5
    assert spec["new_cluster"]["spark_version"] in facts["lts"]
    (library,) = spec["libraries"]
    assert re.fullmatch(rf"/Volumes/[^/]+/[^/]+/[^/]+/pinpipe-{re.escape(VERSION)}-py3-none-any\.whl", library["whl"])
    task = spec["spark_python_task"]
    assert task["python_file"].startswith("/Workspace/") and task["python_file"].endswith("/databricks_task.py")
    assert task["parameters"] == ["batch", "--engine", "spark", "--lake", "s3://my-bucket/lake"]
    assert not any("dbfs:" in json.dumps(value) for value in spec.values())
    for task_id in ("batch", "quality"):
        name, mro = facts["operators"][task_id]
        assert name == "PinpipeSubmitRun" and "DatabricksSubmitRunOperator" in mro
    classes = {code: facts["classes"][text] for code, text in texts.items()}
    assert classes == {
        65: "AirflowFailException",
        2: "AirflowFailException",
        3: "AirflowFailException",
        75: "RuntimeError",  # re-raised as it is: Airflow retries it
        1: "RuntimeError",
        0: "RuntimeError",
    }


DBX_TEST = DAG_TEST.replace('bag.dags["pinpipe_daily"]', 'bag.dags["pinpipe_databricks"]')


def test_a_fatal_run_error_fails_the_databricks_task_without_retries(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """The provider submits to the Jobs API stand-in, polls, reads the failed task's error (what the entry point
    raised for a quality gate on an empty run) and the DAG fails ``batch`` on its first try."""
    lake = tmp_path / "lake"
    land(Lake(f"file://{lake}"), {"pin": [{"index": 1}]})
    _entry("batch", "--lake", str(lake), "--no-gold", cwd=tmp_path)
    _entry("batch", "--lake", str(lake), "--no-gold", cwd=tmp_path)
    error = "PinpipeTaskFailed: " + _raised(
        _entry("quality", "--lake", str(lake), "--max-quarantine-share", "1", cwd=tmp_path)
    )
    port, record = free_port(), tmp_path / "submitted.jsonl"
    argv = [sys.executable, "-m", "tests.fixtures.databricks_api", str(port), str(record), error]
    api = start("databricks-api", argv, port, tmp_path, {**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    conn = {"conn_type": "databricks", "host": "127.0.0.1", "port": port, "schema": "http", "password": "x"}
    home = AirflowHome(airflow_home.path, {**airflow_home.env, "AIRFLOW_CONN_DATABRICKS_DEFAULT": json.dumps(conn)})
    try:
        result = home.run("CONF = {'lake_url': 's3://lake-bucket/lake'}\nSCHEDULED = True\n" + DBX_TEST, timeout=240)
    finally:
        api.stop()
    assert result["state"] == "failed", result
    assert result["tasks"]["batch_spec"][0] == "success"
    assert result["tasks"]["batch"] == ["failed", 1]  # exit 65 read from the run's error: no retry
    assert result["tasks"]["quality"][0] == "upstream_failed"
    submitted: list[dict[str, Any]] = [json.loads(line) for line in record.read_text().splitlines()]
    assert [s["path"] for s in submitted] == ["/api/2.2/jobs/runs/submit"]
    payload = submitted[0]["payload"]
    assert payload["libraries"][0]["whl"].startswith("/Volumes/")
    params = payload["spark_python_task"]["parameters"]
    assert params[:5] == ["batch", "--engine", "spark", "--lake", "s3://lake-bucket/lake"]
    assert params[5] == "--interval-start" and params[7] == "--interval-end"
    assert payload["new_cluster"]["spark_version"].startswith(("15.4.x", "16.4.x"))
