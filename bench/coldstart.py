"""Cold start: ``pinpipe batch`` over the real sample size (11,154 rows per kind landed) in a fresh process.

    python bench/coldstart.py [--runs 5] [--before REV]

What a user or a scheduler pays per run, imports included: each figure is the median of ``--runs`` fresh
processes (wall from the parent's clock, CPU = user + system of the child from ``wait4``), in rounds that
interleave every case so load changes hit them alike. Cases:

- ``floor_python``: ``python -c pass`` (interpreter start and exit);
- ``floor_libs``: ``python -c "import pyarrow, duckdb, deltalake"`` (what any batch on these libraries loads);
- ``help``: ``pinpipe --help``;
- ``first``: ``pinpipe batch`` on a fresh copy of the landed objects (creates silver, quarantine, gold);
- ``again``: ``pinpipe batch`` once more on that lake (nothing new: the daily run that finds nothing);
- ``update``: ``pinpipe batch`` after 200 changed and 200 new ``ind`` per kind are landed the day after.

``--before REV`` runs the same cases on the ``src/`` of a git revision (extracted with ``git archive``, no change
to the work tree) in the same rounds: the before/after comparison under the same load. Bytecode is compiled
first (``compileall``) for both trees, as an installed package has it; the SQL cache (``batch.sql_cache``) is a
private directory warmed by one untimed run per tree. The landing is made by ``bench/batch.py --land``
(``--rows`` per kind, ``--per-object`` records per landed object). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIBS = "import pyarrow, duckdb, deltalake"
UPDATES = 200


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process; raises with its stderr when it fails."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed (exit {code}):\n{err.read().decode()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def tree_env(src: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINPIPE__")}
    env["PYTHONPATH"] = str(src)
    env["PINPIPE__BATCH__SQL_CACHE"] = str(cache)
    return env


def extract(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` under ``into``; returns the directory to put on PYTHONPATH."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=11_154)
    ap.add_argument("--per-object", type=int, default=10_000)
    ap.add_argument("--before", metavar="REV", help="also measure the src/ of this git revision")
    args = ap.parse_args()
    py = sys.executable
    base = Path(tempfile.mkdtemp(prefix="pinpipe-coldstart-"))
    try:
        trees = {"after": ROOT / "src"}
        if args.before:
            trees["before"] = extract(args.before, base / "before")
        for src in trees.values():
            subprocess.run([py, "-m", "compileall", "-q", str(src)], check=True, stdout=subprocess.DEVNULL)
        land = [py, str(ROOT / "bench" / "batch.py"), "--rows", str(args.rows), "--per-object", str(args.per_object)]
        landing_env = tree_env(ROOT / "src", base / "unused-cache")
        subprocess.run([*land, "--land", str(base / "landing"), "--updates", "0"], check=True, env=landing_env)
        update = [*land, "--land", str(base / "update"), "--updates", str(UPDATES)]
        subprocess.run(update, check=True, env=landing_env)
        envs = {name: tree_env(src, base / f"sql-{name}") for name, src in trees.items()}
        for name, env in envs.items():  # warm each tree's SQL cache (and the OS's file cache)
            shutil.copytree(base / "landing", base / f"warm-{name}")
            subprocess.run(
                [py, "-m", "pinpipe", "batch", "--lake", str(base / f"warm-{name}")],
                env=env,
                check=True,
                capture_output=True,
            )
        samples: dict[str, list[tuple[float, float]]] = {}
        load_before = os.getloadavg()
        for r in range(args.runs):
            samples.setdefault("floor_python", []).append(timed([py, "-c", "pass"], envs["after"]))
            samples.setdefault("floor_libs", []).append(timed([py, "-c", LIBS], envs["after"]))
            for name, env in envs.items():
                lake = base / f"lake-{name}-{r}"
                shutil.copytree(base / "landing", lake)
                batch = [py, "-m", "pinpipe", "batch", "--lake", str(lake)]
                samples.setdefault(f"{name}.help", []).append(timed([py, "-m", "pinpipe", "--help"], env))
                samples.setdefault(f"{name}.first", []).append(timed(batch, env))
                samples.setdefault(f"{name}.again", []).append(timed(batch, env))
                shutil.copytree(base / "update", lake, dirs_exist_ok=True)
                samples.setdefault(f"{name}.update", []).append(timed(batch, env))
                shutil.rmtree(lake)
        load_after = os.getloadavg()
        figures: dict[str, Any] = {}
        for case, runs in samples.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            figures[case] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
            print(
                f"{case:16} wall {wall:6.3f} s  cpu {cpu:6.3f} s  (median of {len(runs)}; "
                f"min wall {min(w for w, _ in runs):.3f} s)"
            )
        if "before" in trees:
            for case in ("help", "first", "again", "update"):
                b, a = figures[f"before.{case}"]["wall_s"], figures[f"after.{case}"]["wall_s"]
                print(f"{case:8} before / after wall = {b / a:.2f}x")
        print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)")
        figures.update(
            rows=args.rows,
            runs=args.runs,
            before_rev=args.before,
            load_before=round(load_before[0], 2),
            load_after=round(load_after[0], 2),
        )
        print(json.dumps(figures))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
