"""What a fresh ``pinpipe`` process imports: a structural bound on its start (no timing).

``pinpipe batch`` must not load the API server, Spark, the HTTP client, the metrics library, the source database
layer, the report's templates, pandas — nor, with the SQL cache warm, SQLFrame and sqlglot — and its tables must
be those of the job run in a process where pandas is loaded; ``pinpipe --help`` must not load the data libraries
or the settings at all. Each check runs in a subprocess of its own (a clean
``sys.modules``); the batch runs are the real CLI over a landed lake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pinpipe.batch.gold import GOLD_TABLES
from pinpipe.batch.job import run_batch
from pinpipe.engine import DuckDBEngine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.synth.faults import send_list
from pinpipe.tables import KINDS
from tests.fixtures.batch_lake import land

PREFIX = "0affea73130b"

NOT_FOR_BATCH = ("pyspark", "fastapi", "uvicorn", "starlette", "httpx", "prometheus_client", "sqlalchemy", "jinja2")
"""Top-level packages no part of ``pinpipe batch`` (DuckDB engine) needs."""

NOT_FOR_HELP = ("pyarrow", "numpy", "pandas", "duckdb", "deltalake", "pydantic", "pydantic_settings", "obstore")
"""Top-level packages ``pinpipe --help`` does not need: it only lists the commands."""

BATCH_MODULES = ("pinpipe.cli", "pinpipe.cli.batch_cmd", "pinpipe.batch.job", "pinpipe.engine", "pinpipe.lake.store")
"""What the batch command imports before it runs (``batch_cmd`` imports the rest inside the command)."""

REPORT_MODULES = """
import atexit, sys
OUT = sys.argv.pop(1)
def report():
    names = sorted({m.split(".")[0] for m in sys.modules})
    with open(OUT, "w") as out:
        out.write("\\n".join(names))
atexit.register(report)
"""
"""Prefix of a child's program: at exit (``pinpipe.cli.main`` runs atexit handlers before ``os._exit``), write the
top-level names of every module loaded to the file named by the first argument."""


def _loaded(tmp_path: Path, program: str, *args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """(top-level names of the modules the child ``program`` loaded, its stdout)."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.txt"
    done = subprocess.run(
        [sys.executable, "-c", REPORT_MODULES + program, str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(out.read_text().split()), done.stdout


def _cli(argv: list[str]) -> str:
    return f"import pinpipe.cli\nsys.argv = ['pinpipe', *{argv!r}]\npinpipe.cli.main()\n"


def test_importing_the_batch_command_loads_no_server_spark_or_pandas(tmp_path: Path) -> None:
    loaded, _ = _loaded(tmp_path, "\n".join(f"import {m}" for m in BATCH_MODULES))
    assert {"pinpipe", "typer", "duckdb", "deltalake", "pyarrow"} <= loaded  # the check sees what it should
    assert loaded.isdisjoint({*NOT_FOR_BATCH, "pandas", "sqlframe", "sqlglot"}), sorted(
        loaded & {*NOT_FOR_BATCH, "pandas", "sqlframe", "sqlglot"}
    )


def test_help_loads_neither_the_data_libraries_nor_the_settings(tmp_path: Path) -> None:
    loaded, shown = _loaded(tmp_path, _cli(["--help"]))
    assert "batch" in shown
    assert {"pinpipe", "typer", "rich"} <= loaded
    assert loaded.isdisjoint({*NOT_FOR_HELP, *NOT_FOR_BATCH}), sorted(loaded & {*NOT_FOR_HELP, *NOT_FOR_BATCH})


def test_a_batch_run_loads_no_server_spark_or_pandas_and_no_sqlframe_once_the_sql_is_cached(tmp_path: Path) -> None:
    """Two real ``pinpipe batch`` runs (the first generates the SQL into the cache, the second reads it), each
    over the same landing, then a run of the job in this process (pandas loaded, pyarrow not told otherwise):
    the three lakes hold the same tables."""
    sent = send_list(120, 5, resend_rate=0.1, conflict_rate=0.05, faults=0.1).by_kind()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    env["PINPIPE__BATCH__SQL_CACHE"] = str(tmp_path / "sql-cache")
    runs = []
    for name in ("first", "second"):
        lake = tmp_path / name
        land(Lake(f"file://{lake}"), sent, per_object=40)
        loaded, shown = _loaded(tmp_path, _cli(["batch", "--lake", str(lake)]), env=env)
        assert f"total read {sum(len(r) for r in sent.values())} = " in shown  # the run did its work
        assert "gold tables rewritten 9" in shown
        runs.append(loaded)
    first, second = runs
    assert {"pinpipe", "duckdb", "deltalake", "sqlframe"} <= first  # compiling the programs needs SQLFrame
    assert first.isdisjoint(NOT_FOR_BATCH), sorted(first & set(NOT_FOR_BATCH))
    assert {"pinpipe", "duckdb", "deltalake", "pyarrow"} <= second
    unwanted = {*NOT_FOR_BATCH, "pandas", "sqlframe", "sqlglot"}
    assert second.isdisjoint(unwanted), sorted(second & unwanted)

    import pandas  # noqa: F401  (this process: pyarrow sees pandas, as a library caller's would)

    here = Lake(f"file://{tmp_path / 'here'}")
    land(here, sent, per_object=40)
    with DuckDBEngine() as engine:
        run_batch(here, engine, PREFIX)
    parts = [(layer, kind) for layer in ("silver", "quarantine") for kind in KINDS]
    for part in [*parts, *(("gold", name) for name in GOLD_TABLES)]:
        expected = _rows(here, part)
        assert expected or part[0] == "quarantine", part  # a kind may have nothing to quarantine
        for name in ("first", "second"):
            assert _rows(Lake(f"file://{tmp_path / name}"), part) == expected, (name, part)


def _rows(lake: Lake, part: tuple[str, str]) -> list[dict[str, object]] | None:
    table = delta.read_table(lake, *part)
    return None if table is None else sorted(table.to_pylist(), key=repr)
