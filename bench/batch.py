"""Batch benchmark: N generated rows per table landed as JSON → silver (+ gold), DuckDB vs PySpark (local mode) vs
PySpark on a standalone cluster.

    python bench/batch.py [--rows 1000000] [--engines duckdb,spark,cluster] [--per-object 10000] [--updates 10000]
                          [--chunk-records 500000]

Two runs per engine: the first day (every row new), then an update run (``--updates`` changed ``ind`` spread over
the key range plus as many new ones per table: the bucketed merge reads and rewrites only the files those keys
can touch). Prints wall time, CPU time and peak RSS per engine and run, with the load average before each (each run in a fresh child process on its own copy of the
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
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SLICE = 1_000_000
"""Rows per table generated at a time when landing more (each slice: its own seed, its own ``ind`` range)."""

DEFAULT_CHUNK_RECORDS = 500_000
"""``batch.chunk_records``'s default (the DuckDB run cleans and commits each kind this many records at a time)."""

CHANGED = {"pin": ("title", "changed"), "geo": ("country", "Changed"), "user": ("age", 77)}
"""The field an update run changes per kind, and its new value."""


def land(root: Path, rows: int, per_object: int, updates: int = 0) -> None:
    """Land ``rows`` generated records per table; with ``updates``, land instead the day after: ``updates``
    records per table that change an ``ind`` landed before (spread over the whole key range) and as many new
    ``ind``, at the offsets after the first day's."""
    from pinpipe.lake.store import Lake

    if updates and rows > SLICE:
        raise SystemExit(f"--updates needs --rows ≤ {SLICE:,}")
    lake = Lake(f"file://{root}")
    ends: dict[str, int] = {}
    for part in range(0, rows, SLICE):  # sizes above SLICE: seeded slices of new ind, not one huge send list
        _land_slice(lake, min(SLICE, rows - part), part // SLICE, per_object, updates, ends)


def _small_int(value: Any) -> bool:
    return type(value) is int and 0 <= value < 10**8


def _land_slice(lake: Any, rows: int, n: int, per_object: int, updates: int, ends: dict[str, int]) -> None:
    """Slice ``n`` of the landing: ``rows`` records per table from seed ``n + 1``, ``ind`` shifted by ``n`` × 10⁸
    (slice 0 is what a landing of at most SLICE rows lands), at the offsets after the previous slices'."""
    import orjson

    from pinpipe.lake.store import landed_key
    from pinpipe.synth.faults import send_list

    sent = send_list(rows, n + 1, resend_rate=0.02, faults=0.01).by_kind()
    for kind, records in sent.items():
        key = "index" if kind == "pin" else "ind"
        if n:
            records = [
                {**r, key: r[key] + n * 10**8} if isinstance(r, dict) and _small_int(r.get(key)) else r for r in records
            ]
        start = ends.get(kind, 0)
        if updates:
            key = "index" if kind == "pin" else "ind"
            good = [r for r in records if isinstance(r, dict) and isinstance(r.get(key), int)]
            step = max(1, len(good) // updates)
            field, value = CHANGED[kind]
            changed = [{**r, field: value} for r in good[::step][:updates]]
            new = [{**r, key: r[key] + 10**9} for r in good[1::step][:updates]]
            start, records = len(records), changed + new
        lines = [orjson.dumps(r) for r in records]
        for i in range(0, len(lines), per_object):
            chunk = b"\n".join(lines[i : i + per_object]) + b"\n"
            lake.put(landed_key(f"0affea73130b.{kind}", 0, start + i), chunk)
        ends[kind] = start + len(lines)


def child(lake: str, engine_name: str, master: str, chunk_records: str) -> None:
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
        result = run_batch(Lake(lake), engine, "0affea73130b", chunk_records=int(chunk_records))
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
    ap.add_argument("--updates", type=int, default=10_000, help="second run: changed + new ind per table (0: none)")
    ap.add_argument(
        "--chunk-records", type=int, default=DEFAULT_CHUNK_RECORDS, help="DuckDB: records per kind per chunk"
    )
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--land", metavar="DIR")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.land:
        land(Path(args.land), args.rows, args.per_object, args.updates)
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
        landing = ["--rows", str(args.rows), "--per-object", str(args.per_object)]
        subprocess.run(
            [sys.executable, __file__, "--land", str(base / "landing"), *landing, "--updates", "0"], check=True
        )
        if args.updates:
            update = ["--land", str(base / "update"), *landing, "--updates", str(args.updates)]
            subprocess.run([sys.executable, __file__, *update], check=True)
        print(f"landed {args.rows} rows per table (and the update run's) in {time.perf_counter() - t0:.1f} s")
        figures: dict[str, dict[str, float]] = {}
        for name in args.engines.split(","):
            lake = base / name
            shutil.copytree(base / "landing", lake)
            for run in ("first", "update") if args.updates else ("first",):
                if run == "update":
                    shutil.copytree(base / "update", lake, dirs_exist_ok=True)
                load = os.getloadavg()[0]
                out = subprocess.run(
                    [sys.executable, __file__, "--child", f"file://{lake}", name, master, str(args.chunk_records)],
                    capture_output=True,
                    text=True,
                )
                key = name if run == "first" else f"{name}_update"
                if out.returncode != 0:
                    print(f"{key:14} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
                    break
                figures[key] = {**json.loads(out.stdout.strip().splitlines()[-1]), "load_before": load}
                f = figures[key]
                print(
                    f"{key:14} wall {f['wall']:.1f} s  cpu {f['cpu']:.1f} s  peak RSS {f['rss_mb']:.0f} MB  "
                    f"read {f['read']}  gold tables {f['gold']}  (load average {load:.1f} before)"
                )
        for name in ("spark", "cluster", "spark_update", "cluster_update"):
            base_name = "duckdb_update" if name.endswith("_update") else "duckdb"
            if base_name in figures and name in figures:
                print(f"{name} / {base_name} = {figures[name]['wall'] / figures[base_name]['wall']:.1f}x")
        print(json.dumps(figures))
    finally:
        stack.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
