"""``pinpipe demo`` end to end, as a user runs it: real processes, real ports, the embedded defaults.

1. The gold tables the demo prints are exactly what ``pinpipe results --format json`` reads from the same lake.
2. A demo interrupted with Ctrl-C (SIGINT) mid-emulation stops every service it started, and a re-run continues
   where it stopped: it sends only the chunks not yet sent and the end-to-end accounting balances.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PINPIPE = [sys.executable, "-m", "pinpipe"]
TITLE = re.compile(r"^(\w+) \((\d+) rows\)\s*$")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    env["COLUMNS"] = "300"  # wide enough that no table cell wraps
    return env


def _demo(tmp: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PINPIPE, "demo", "--data-dir", str(tmp / "data"), *args],
        cwd=tmp,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def printed_tables(stdout: str) -> dict[str, list[list[str]]]:
    """The demo's gold tables as ``{name: [row cells]}``, read back from its Rich output."""
    tables: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for line in stdout.splitlines():
        title = TITLE.match(line)
        if title:
            current = tables.setdefault(title.group(1), [])
        elif current is not None and line.startswith("│"):
            current.append([cell.strip() for cell in line.strip().strip("│").split("│")])
        elif current is not None and line.startswith("└"):
            current = None
    return tables


def _as_cells(row: dict[str, Any]) -> list[str]:
    return ["" if v is None else str(v) for v in row.values()]


def test_the_demo_prints_the_gold_tables_that_results_reads(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--events", "500")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "accounting: balanced" in demo.stdout
    assert "quality gate: passed" in demo.stdout
    report = tmp_path / "data" / "report.html"
    assert f"report: {report}" in demo.stdout
    assert report.stat().st_size > 1000

    results = subprocess.run(
        [*PINPIPE, "results", "--lake", f"file://{tmp_path / 'data' / 'lake'}", "--format", "json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    gold = json.loads(results.stdout)
    assert len(gold) == 9
    printed = printed_tables(demo.stdout)
    assert printed == {name: [_as_cells(row) for row in rows] for name, rows in gold.items()}
    assert sum(len(rows) for rows in printed.values()) > 50


def _started_pids(stderr: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"started (\w+)\s+pid=(\d+)", stderr)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_interrupted_demo_continues_without_loss_or_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--events", "1500", "--records-per-request", "10"]
    proc = subprocess.Popen(
        [*PINPIPE, "demo", "--data-dir", str(data), *args],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not (data / "demo-state.json").exists():  # the first chunk is sent; the next one is in flight
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the demo sent nothing in 180 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "run `pinpipe demo` again" in err
    pids = _started_pids(err)
    assert {"api", "sink"} <= set(pids)
    assert not [name for name, pid in pids.items() if _alive(pid)], "a service outlived the demo"
    done_before = json.loads((data / "demo-state.json").read_text())["done"]
    assert 1 <= len(done_before) < 6  # interrupted after the first of six chunks, before the last

    rerun = _demo(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "were sent by an earlier run" in rerun.stderr
    assert "accounting: balanced" in rerun.stdout
    assert "quality gate: passed" in rerun.stdout
    assert len(json.loads((data / "demo-state.json").read_text())["done"]) == 6
    assert not [name for name, pid in _started_pids(rerun.stderr).items() if _alive(pid)]
