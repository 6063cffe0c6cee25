"""Batch benchmark: N generated rows per table landed as JSON → silver (+ gold), DuckDB vs PySpark (local mode) vs
PySpark on a standalone cluster.

    python bench/batch.py [--rows 1000000] [--engines duckdb,spark,cluster] [--per-object 10000]

Prints wall time, CPU time and peak RSS per engine (each run in a fresh child process on its own copy of the
landed objects; the rows are generated and landed in another child, so no engine's figures include the
generator's memory) and the ratio. For Spark the driver's peak RSS is the Python process plus the driver JVM.
``cluster`` starts a master and two one-core, 1 GiB workers from the pyspark package on 127.0.0.1 and runs the
driver with ``spark.driver.memory=1g`` (the executors do the reading, cleaning and writing). Targets (2-core machine): DuckDB < 30 s at 1M rows, ≥ 5× faster than PySpark, peak RSS < 4 GB; the real
size (11,154 rows) < 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def land(root: Path, rows: int, per_object: int) -> None:
    import orjson

    from pinpipe.lake.store import Lake, landed_key
    from pinpipe.synth.faults import send_list

    lake = Lake(f"file://{root}")
    sent = send_list(rows, 1, resend_rate=0.02, faults=0.01).by_kind()
    for kind, records in sent.items():
        lines = [orjson.dumps(r) for r in records]
        for i in range(0, len(lines), per_object):
            lake.put(landed_key(f"0affea73130b.{kind}", 0, i), b"\n".join(lines[i : i + per_object]) + b"\n")


def child(lake: str, engine_name: str, master: str) -> None:
    from pinpipe.batch.job import run_batch
    from pinpipe.config import SparkSettings
    from pinpipe.engine import open_engine
    from pinpipe.lake.store import Lake

    t0, c0 = time.perf_counter(), time.process_time()
    jvm_rss = 0.0
    if engine_name == "cluster":
        conf = {"spark.driver.host": "127.0.0.1", "spark.executor.memory": "1g", "spark.cores.max": "2"}
        settings = SparkSettings(master=master, driver_memory="1g", conf=conf)
    else:
        settings = SparkSettings(master="local[2]")
    with open_engine("duckdb" if engine_name == "duckdb" else "spark", settings) as engine:
        result = run_batch(Lake(lake), engine, "0affea73130b")
        if engine_name != "duckdb":
            jvm_pid = engine.session.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
            jvm_rss = peak_rss_mb(f"/proc/{jvm_pid}/status")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_mb() + jvm_rss
    figures = {"wall": wall, "cpu": cpu, "rss_mb": rss, "read": result.total.read, "gold": len(result.gold_written)}
    print(json.dumps(figures))


def peak_rss_mb(status: str = "/proc/self/status") -> float:
    """A process's peak RSS (this one by default). ``VmHWM`` (Linux) rather than ``ru_maxrss``, which after
    ``exec`` still holds the high-water mark of the forking parent."""
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--engines", default="duckdb,spark")
    ap.add_argument("--per-object", type=int, default=10_000)
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--land", metavar="DIR")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.land:
        land(Path(args.land), args.rows, args.per_object)
        return
    base = Path(tempfile.mkdtemp(prefix="pinpipe-bench-"))
    stack = contextlib.ExitStack()
    try:
        master = "-"
        if "cluster" in args.engines.split(","):
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.fixtures.spark_cluster import spark_cluster

            master = stack.enter_context(spark_cluster(base / "spark-processes")).master_url
        t0 = time.perf_counter()
        landing = ["--land", str(base / "landing"), "--rows", str(args.rows), "--per-object", str(args.per_object)]
        subprocess.run([sys.executable, __file__, *landing], check=True)
        print(f"landed {args.rows} rows per table in {time.perf_counter() - t0:.1f} s")
        figures = {}
        for name in args.engines.split(","):
            lake = base / name
            shutil.copytree(base / "landing", lake)
            out = subprocess.run(
                [sys.executable, __file__, "--child", f"file://{lake}", name, master], capture_output=True, text=True
            )
            if out.returncode != 0:
                print(f"{name:7} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
                continue
            figures[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:7} wall {figures[name]['wall']:.1f} s  cpu {figures[name]['cpu']:.1f} s  peak RSS {figures[name]['rss_mb']:.0f} MB  "
                f"read {figures[name]['read']}  gold tables {figures[name]['gold']}"
            )
        for name in ("spark", "cluster"):
            if "duckdb" in figures and name in figures:
                print(f"{name} / duckdb = {figures[name]['wall'] / figures['duckdb']['wall']:.1f}x")
        print(json.dumps(figures))
    finally:
        stack.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
