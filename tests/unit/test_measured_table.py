"""The README's measured table is what ``bench/measured_table.py`` renders from ``bench/results/``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "measured_table.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_readme_table_is_the_rendered_one() -> None:
    done = _run("--check")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_hand_edit_of_a_figure_fails_the_check(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(**not met**)" in readme.split("<!-- measured-table")[1]
    edited = tmp_path / "README.md"
    start = readme.index("<!-- measured-table")
    edited.write_text(readme[:start] + readme[start:].replace("(**not met**)", "(met)", 1))
    done = _run("--check", "--readme", str(edited))
    assert done.returncode == 1
    assert "-" in done.stdout and "(met)" in done.stdout  # the diff names the edited line
    assert _run("--write", "--readme", str(edited)).returncode == 0
    assert edited.read_text() == readme  # --write puts the rendered table back


def test_record_keeps_the_last_json_line_and_refuses_a_run_without_one(tmp_path: Path) -> None:
    program = "print('figures below'); print('{\"wall_s\": 1.25, \"runs\": 3}')"
    done = _run("record", "probe", "--results", str(tmp_path), "--", sys.executable, "-c", program)
    assert done.returncode == 0, done.stderr
    assert "figures below" in done.stdout  # the bench's own output is shown as it runs
    doc = json.loads((tmp_path / "probe.json").read_text())
    assert doc["figures"] == {"wall_s": 1.25, "runs": 3}
    assert doc["command"].startswith("python -c ") and len(doc["load_average"]) == 2
    assert doc["machine"]["cpus"] >= 1 and doc["recorded_at"][:2] == "20"
    assert (
        _run("record", "none", "--results", str(tmp_path), "--", sys.executable, "-c", "print('no json')").returncode
        == 2
    )
    failing = _run("record", "failed", "--results", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(3)")
    assert failing.returncode == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json"]
