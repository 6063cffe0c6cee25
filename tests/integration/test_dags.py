"""The Airflow DAGs in ``dags/``, loaded and run by real Airflow 3 in its own virtualenv (``.venv-airflow``).

Airflow cannot be imported here (it pins FastAPI below pinpipe's), so each check runs a short script with
``.venv-airflow/bin/python`` in a scratch ``AIRFLOW_HOME`` (after ``airflow db migrate``) and reads one JSON
line back. The end-to-end test prepares a working directory the way a deployment would (source database,
API, emulated traffic) and lets ``dag.test()`` land, batch, gate and report through the real ``pinpipe`` CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import free_port, start, venv_bin

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
MARK = "RESULT-JSON:"


@dataclass(frozen=True)
class AirflowHome:
    """A migrated scratch ``AIRFLOW_HOME`` and the environment that points Airflow at it and at ``dags/``."""

    path: Path
    env: dict[str, str]

    def run(self, script: str, timeout: float = 180.0) -> Any:
        """Run ``script`` with Airflow's interpreter; it must ``emit(obj)`` once. Returns ``obj``."""
        prelude = (
            "import json\n"
            "def emit(obj):\n"
            f"    print({MARK!r} + json.dumps(obj, default=str), flush=True)\n"
            "    import os; os._exit(0)  # skip Airflow's slow interpreter teardown\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        )
        proc = subprocess.run(
            [str(AIRFLOW_PYTHON), "-c", prelude + textwrap.dedent(script)],
            env=self.env,
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise AssertionError(
            f"script printed no result (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def _build_airflow_venv() -> str | None:
    """Build ``.venv-airflow`` with ``make airflow`` if it is missing; the reason it cannot be built, or None."""
    if AIRFLOW_PYTHON.exists():
        return None
    try:
        proc = subprocess.run(["make", "airflow"], cwd=REPO, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`make airflow` could not run: {exc}"
    if proc.returncode != 0 or not AIRFLOW_PYTHON.exists():
        return f"`make airflow` failed (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}"
    return None


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHome]:
    reason = _build_airflow_venv()
    if reason is not None:
        print(f"SKIP: the Airflow virtualenv cannot be built: {reason}", file=sys.stderr)
        pytest.skip(f"the Airflow virtualenv cannot be built: {reason}")
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PINPIPE", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PYTHONWARNINGS="ignore",
    )
    migrate = subprocess.run(
        [str(AIRFLOW_PYTHON.parent / "airflow"), "db", "migrate"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    yield AirflowHome(home, env)


FACTS = """
import importlib.util
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for d in bag.dags.values():
    out["dags"][d.dag_id] = {
        "timetable": type(d.timetable).__name__,
        "cron": d.timetable.expression,
        "catchup": d.catchup,
        "tasks": {t.task_id: [type(t).__name__, t.retries, t.retry_delay.total_seconds()] for t in d.tasks},
        "params": sorted(d.params.keys()),
    }
dbx = bag.dags["pinpipe_databricks"]
spec = importlib.util.spec_from_file_location("pinpipe_databricks_module", dbx.fileloc)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
params = {k: dbx.params[k] for k in dbx.params.keys()}
out["databricks"] = {
    "new": mod.run_spec(params, "pinpipe batch", ["batch", "--engine", "spark"]),
    "existing": mod.run_spec({**params, "existing_cluster_id": "1108-162752-8okw8dgg"}, "x", ["batch"]),
    "conn_ids": {t.task_id: getattr(t, "databricks_conn_id", None) for t in dbx.tasks},
}
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


def test_schedule_retries_and_catchup_match_the_original(dag_facts: dict[str, Any]) -> None:
    for dag_id, dag in dag_facts["dags"].items():
        assert dag["timetable"] == "CronDataIntervalTimetable", dag_id  # [D, D+1): "@daily" would be empty
        assert dag["cron"] == "0 0 * * *"
        assert dag["catchup"] is False
        assert all(task[1:] == [3, 120.0] for task in dag["tasks"].values()), dag["tasks"]
    daily, dbx = dag_facts["dags"]["pinpipe_daily"], dag_facts["dags"]["pinpipe_databricks"]
    assert {"pinpipe", "workdir", "lake_url", "log_url", "engine", "max_quarantine_share"} <= set(daily["params"])
    assert {"databricks_conn_id", "existing_cluster_id", "new_cluster", "lake_url"} <= set(dbx["params"])


def test_databricks_variant_submits_the_spark_batch_entry_point(dag_facts: dict[str, Any]) -> None:
    dbx = dag_facts["databricks"]
    ops = dag_facts["dags"]["pinpipe_databricks"]["tasks"]
    assert ops["batch"][0] == ops["quality"][0] == "DatabricksSubmitRunOperator"
    assert dbx["conn_ids"]["batch"] == "{{ params.databricks_conn_id }}"
    new = dbx["new"]
    assert new["spark_python_task"]["parameters"] == ["batch", "--engine", "spark"]
    assert new["spark_python_task"]["python_file"].endswith(".py")
    assert new["libraries"][0]["whl"].endswith(".whl")
    assert "new_cluster" in new and "existing_cluster_id" not in new
    assert dbx["existing"]["existing_cluster_id"] == "1108-162752-8okw8dgg"
    assert "new_cluster" not in dbx["existing"]


DAG_TEST = """
dag = bag.dags["pinpipe_daily"]
run = dag.test(run_conf=CONF)
emit({"state": str(run.state),
      "interval": [run.data_interval_start.isoformat(), run.data_interval_end.isoformat()],
      "tasks": {ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}})
"""


def test_a_failed_quality_gate_fails_the_run_at_once(airflow_home: AirflowHome, tmp_path: Path) -> None:
    fake = tmp_path / "pinpipe"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> calls.txt\n'
        'if [ "$1" = quality ]; then echo "accounting does not balance" >&2; exit 3; fi\n'
    )
    fake.chmod(0o755)
    conf = {"pinpipe": str(fake), "workdir": str(tmp_path), "lake_url": "file://lake"}
    result = airflow_home.run(f"CONF = {conf!r}\n" + DAG_TEST)
    assert result["state"] == "failed"
    assert result["tasks"]["land"][0] == "success"
    assert result["tasks"]["batch"][0] == "success"
    assert result["tasks"]["quality"] == ["failed", 1]  # exit 3: no retry can fix it
    assert result["tasks"]["report"][0] == "upstream_failed"
    start, end = result["interval"]
    assert start.endswith("T00:00:00+00:00") and end.endswith("T00:00:00+00:00") and start < end
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0] == "sink --until-idle"
    assert calls[1] == f"batch --interval-start {start} --interval-end {end}"
    assert calls[2].startswith("quality --max-quarantine-share 0.05 --interval-start")


def test_the_daily_dag_lands_batches_gates_and_reports_end_to_end(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """A prepared deployment (source database, API, emulated traffic in both dialects), then ``dag.test()``."""
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

    conf = {"pinpipe": pinpipe, "workdir": str(work), "lake_url": lake, "log_url": log}
    result = airflow_home.run(f"CONF = {conf!r}\n" + DAG_TEST, timeout=300)
    assert result["state"] == "success", result
    assert {task: state for task, (state, _) in result["tasks"].items()} == dict.fromkeys(
        ("land", "batch", "quality", "report"), "success"
    )
    gold = sorted(p.name for p in (work / "lake" / "gold").iterdir() if (p / "_delta_log").is_dir())
    assert len(gold) == 9 and "top_category_by_country" in gold
    reports = list((work / "pinpipe-data" / "reports").glob("pinpipe-*.html"))
    assert len(reports) == 1 and reports[0].name == f"pinpipe-{result['interval'][0][:10]}.html"
    assert reports[0].stat().st_size > 1000
