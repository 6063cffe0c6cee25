"""Scale benchmark: does the cost of a micro-batch and of a daily run follow the records given, not silver's size?

    python bench/scale.py [--rows 0,100000,1000000] [--batches 5] [--keep DIR]

For each size N (rows per kind already in silver) a fresh ``file://`` lake under /tmp is filled with N generated
rows per kind (cleaned by the oracle, merged into silver through :func:`pinpipe.lake.delta.merge_silver` in chunks
of at most 1M rows, as a batch run leaves it), then, each step in its own child process (so peak RSS = that
step's ``VmHWM``):

(a) **micro-batch**: ``--batches`` merges per kind of 300 new ``ind`` (above the table's largest) plus 6 changed
    rows of old ``ind`` spread over the whole key range (2 %), as the stream worker commits them;
    The files each merge read are those it reports (``MergeStats.files_read``: the files whose statistics can
    hold one of its keys), else those its keys' buckets and ranges keep (``delta.silver_files``, the pruning
    delta-rs applies to a MERGE predicate; every file of the table on a layout without it).
(b) **gold over the filled silver** (``prime``: a batch run with nothing new, as yesterday's run left the lake:
    gold computed from whole silver when there is no gold yet), then the **daily run**: 11,154 records per kind
    landed as JSON objects (2 % of them changed old ``ind``), then one ``run_batch`` with gold.

Every batch run reads the cleaning programs' SQL from a cache a warm-up run filled (as ``pinpipe batch`` does with
``batch.sql_cache``). Printed per size: wall (median per micro-batch, all three kinds; the daily run's total, and its silver part —
cleaning, quarantine, merges — apart from gold), the priming run (gold from whole silver), peak RSS, the data files
each merge rewrote (removed from the table: copy-on-write) and added, and the table's file count. The same-run
baseline is the empty table (N = 0): each figure is also printed as a ratio to it. The last line is one JSON
object with every figure. Not a timed test: the figures depend on the machine.

With ``--keep DIR`` each filled lake is kept as ``DIR/filled-<N>`` (a 10M fill takes minutes) and reused by later
runs: every measurement then runs on a hard-linked copy of it (Delta and landed files are never modified in
place, so the kept lake stays as filled).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PREFIX = "0affea73130b"
DAILY = 11_154
MICRO_NEW = 300
MICRO_OLD = 6
CHUNK = 1_000_000


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def silver_rows(n: int, start: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Oracle-cleaned silver rows of ``n`` generated records per kind, keys ``start..start+n-1``."""
    from pinpipe.synth.generate import generate_records
    from pinpipe.synth.oracle import clean_record

    out: dict[str, list[dict[str, Any]]] = {}
    for kind, records in generate_records(n, seed, start=start).items():
        out[kind] = [row for r in records if (row := clean_record(kind, r).row) is not None]  # type: ignore[arg-type]
    return out


def table_files(lake_url: str, kind: str) -> set[str]:
    from deltalake import DeltaTable

    try:
        return set(DeltaTable(f"{lake_url}/silver/{kind}").file_uris())
    except Exception:
        return set()


def child_fill(lake_url: str, n: int) -> dict[str, Any]:
    import pyarrow as pa

    from pinpipe.lake import delta
    from pinpipe.lake.store import Lake
    from pinpipe.tables import SILVER_SCHEMAS

    lake = Lake(lake_url)
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        rows = silver_rows(min(CHUNK, n - start), start, 0)
        for kind, kind_rows in rows.items():
            table = pa.Table.from_pylist(kind_rows, schema=SILVER_SCHEMAS[kind])  # type: ignore[index]
            delta.merge_silver(lake, kind, table)  # type: ignore[arg-type]
        del rows
    return {
        "wall": time.perf_counter() - t0,
        "files": {k: len(table_files(lake_url, k)) for k in ("pin", "geo", "user")},
    }


def _rekeyed(rows: list[dict[str, Any]], keys: list[int]) -> list[dict[str, Any]]:
    return [{**row, "ind": key} for row, key in zip(rows, keys, strict=False)]


def child_micro(lake_url: str, n: int, batches: int) -> dict[str, Any]:
    import pyarrow as pa

    from pinpipe.lake import delta
    from pinpipe.lake.store import Lake
    from pinpipe.tables import SILVER_SCHEMAS

    lake = Lake(lake_url)
    rng = random.Random(n)
    walls: list[float] = []
    per_kind: dict[str, list[float]] = {"pin": [], "geo": [], "user": []}
    removed: list[int] = []
    added: list[int] = []
    read: list[int] = []
    for b in range(batches):
        start = n + b * MICRO_NEW
        rows = silver_rows(MICRO_NEW + MICRO_OLD, start, 1)
        old = sorted(rng.sample(range(n), MICRO_OLD)) if n >= MICRO_OLD else []
        total = 0.0
        for kind, kind_rows in rows.items():
            batch = kind_rows[:MICRO_NEW] + _rekeyed(kind_rows[MICRO_NEW:], old)
            table = pa.Table.from_pylist(batch, schema=SILVER_SCHEMAS[kind])  # type: ignore[index]
            before = table_files(lake_url, kind)
            may_read = getattr(delta, "silver_files", None)  # the files its keys can touch (pruned layout)
            pruned = len(may_read(lake, kind, [r["ind"] for r in batch]) or []) if may_read else len(before)
            t0 = time.perf_counter()
            merged = delta.merge_silver(lake, kind, table, app_txns={f"bench:{kind}": b + 1})  # type: ignore[arg-type]
            took = time.perf_counter() - t0
            # what the merge itself says it read, where it says (pinpipe's own copy-on-write merge)
            reported = getattr(merged, "files_read", None)
            read.append(pruned if reported is None else int(reported))
            after = table_files(lake_url, kind)
            per_kind[kind].append(took)
            total += took
            removed.append(len(before - after))
            added.append(len(after - before))
        walls.append(total)
    return {
        "wall_median": statistics.median(walls),
        "wall_max": max(walls),
        "per_kind_median": {k: statistics.median(v) for k, v in per_kind.items()},
        "files_read_max": max(read),
        "files_read_last": read[-3:],
        "files_rewritten_max": max(removed),
        "files_added_max": max(added),
        "files": {k: len(table_files(lake_url, k)) for k in ("pin", "geo", "user")},
        "rss_mb": peak_rss_mb(),
    }


def child_land(lake_url: str, n: int) -> dict[str, Any]:
    """Land the daily increment: DAILY raw records per kind, new keys above the micro-batches', 2 % old keys."""
    import orjson

    from pinpipe.lake.store import Lake, landed_key
    from pinpipe.synth.generate import generate_records
    from pinpipe.tables import RAW_TABLES

    lake = Lake(lake_url)
    rng = random.Random(n + 1)
    n_old = DAILY * 2 // 100 if n else 0
    old = rng.sample(range(n), n_old) if n_old else []
    records = generate_records(DAILY, 2, start=n + 100_000)
    for kind, recs in records.items():
        key = RAW_TABLES[kind].key  # type: ignore[index]
        sent = [*recs[: DAILY - n_old], *({**r, key: k} for r, k in zip(recs[DAILY - n_old :], old, strict=True))]
        lines = [orjson.dumps(r) for r in sent]
        for i in range(0, len(lines), 10_000):
            lake.put(landed_key(f"{PREFIX}.{kind}", 0, i), b"\n".join(lines[i : i + 10_000]) + b"\n")
    return {"records": DAILY * 3}


def child_prime(lake_url: str, sql_cache: str) -> dict[str, Any]:
    """Yesterday's run: a batch run with nothing new landed computes gold (and its state) over the filled silver,
    so the daily run measured next starts from a lake a daily schedule leaves."""
    from pinpipe.batch.job import run_batch
    from pinpipe.engine import open_engine
    from pinpipe.lake.store import Lake

    with open_engine("duckdb", sql_cache=Path(sql_cache)) as engine:
        t0 = time.perf_counter()
        result = run_batch(Lake(lake_url), engine, PREFIX)
        wall = time.perf_counter() - t0
    return {"wall": wall, "rss_mb": peak_rss_mb(), "gold": len(result.gold_written)}


def child_daily(lake_url: str, sql_cache: str) -> dict[str, Any]:
    from pinpipe.batch.job import run_batch
    from pinpipe.engine import open_engine
    from pinpipe.lake.store import Lake

    before = {k: table_files(lake_url, k) for k in ("pin", "geo", "user")}
    marks: dict[str, float] = {}

    def progress(step: str, done: int, total: int) -> None:
        marks[step] = time.perf_counter()  # the last "writing <kind>" ends the silver part of the run

    with open_engine("duckdb", sql_cache=Path(sql_cache)) as engine:
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_batch(Lake(lake_url), engine, PREFIX, progress=progress)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    silver_s = max(v for k, v in marks.items() if k.startswith("writing")) - t0
    after = {k: table_files(lake_url, k) for k in ("pin", "geo", "user")}
    return {
        "wall": wall,
        "cpu": cpu,
        "silver_s": silver_s,
        "gold_s": wall - silver_s,
        "rss_mb": peak_rss_mb(),
        "read": result.total.read,
        "inserted": result.total.inserted,
        "updated": result.total.updated,
        "gold": len(result.gold_written),
        "files_rewritten": {k: len(before[k] - after[k]) for k in before},
        "files_added": {k: len(after[k] - before[k]) for k in before},
        "files": {k: len(v) for k, v in after.items()},
    }


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def filled_lake(base: Path, n: int, keep: Path | None) -> dict[str, Any]:
    """Fill ``base/lake-<n>`` with ``n`` rows per kind, or copy the kept ``keep/filled-<n>`` (filled first if it
    is not there yet); the fill's figures."""
    work = base / f"lake-{n}"
    if keep is None:
        work.mkdir()
        return run_child("fill", f"file://{work}", str(n)) if n else {"wall": 0.0, "files": {}}
    kept = keep / f"filled-{n}"
    done = keep / f"filled-{n}.json"
    if not done.exists():
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        fill = run_child("fill", f"file://{kept}", str(n)) if n else {"wall": 0.0, "files": {}}
        done.write_text(json.dumps(fill))
    subprocess.run(["cp", "-al", str(kept), str(work)], check=True)
    fill = json.loads(done.read_text())
    fill["kept"] = True
    return dict(fill)


def warm_sql_cache(base: Path) -> str:
    """A batch run on a scratch lake fills the SQL cache every later run reads (``batch.sql_cache``, as the CLI
    does), so no measured run pays for generating the cleaning programs' SQL."""
    cache, warm = base / "sql-cache", base / "warm"
    warm.mkdir()
    run_child("land", f"file://{warm}", "0")
    run_child("daily", f"file://{warm}", str(cache))
    shutil.rmtree(warm, ignore_errors=True)
    return str(cache)


def measure(base: Path, n: int, batches: int, keep: Path | None, sql_cache: str) -> dict[str, Any]:
    lake_url = f"file://{base / f'lake-{n}'}"
    fill = filled_lake(base, n, keep)
    micro = run_child("micro", lake_url, str(n), str(batches))
    prime = run_child("prime", lake_url, sql_cache)
    run_child("land", lake_url, str(n))
    daily = run_child("daily", lake_url, sql_cache)
    shutil.rmtree(base / f"lake-{n}", ignore_errors=True)
    return {"fill": fill, "micro": micro, "prime": prime, "daily": daily}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="0,100000,1000000", help="comma-separated silver sizes (rows per kind)")
    ap.add_argument("--batches", type=int, default=5, help="micro-batches per size")
    ap.add_argument("--keep", type=Path, help="keep the filled lakes in this directory and reuse them")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        step, *rest = args.child
        if step == "fill":
            print(json.dumps(child_fill(rest[0], int(rest[1]))))
        elif step == "micro":
            print(json.dumps(child_micro(rest[0], int(rest[1]), int(rest[2]))))
        elif step == "prime":
            print(json.dumps(child_prime(rest[0], rest[1])))
        elif step == "land":
            print(json.dumps(child_land(rest[0], int(rest[1]))))
        else:
            print(json.dumps(child_daily(rest[0], rest[1])))
        return
    sizes = [int(s) for s in args.rows.split(",")]
    if 0 not in sizes:
        sizes.insert(0, 0)  # the same-run baseline
    base = Path(tempfile.mkdtemp(prefix="pinpipe-scale-"))
    figures: dict[str, Any] = {}
    try:
        sql_cache = warm_sql_cache(base)
        for n in sizes:
            f = figures[str(n)] = measure(base, n, args.batches, args.keep, sql_cache)
            b = figures["0"]
            m, d = f["micro"], f["daily"]
            print(
                f"N={n:>9,}  fill {f['fill']['wall']:6.1f} s | micro-batch {m['wall_median'] * 1000:7.0f} ms "
                f"(max {m['wall_max'] * 1000:.0f}, x{m['wall_median'] / b['micro']['wall_median']:.1f}) "
                f"read ≤{m['files_read_max']} rewrote ≤{m['files_rewritten_max']} files, RSS {m['rss_mb']:.0f} MB | daily {d['wall']:5.1f} s "
                f"(x{d['wall'] / b['daily']['wall']:.1f}; silver {d['silver_s']:.1f} s, gold {d['gold_s']:.1f} s; CPU {d['cpu']:.1f} s) RSS {d['rss_mb']:.0f} MB "
                f"(x{d['rss_mb'] / b['daily']['rss_mb']:.1f}) rewrote {sum(d['files_rewritten'].values())} files | "
                f"gold from whole silver {f['prime']['wall']:.1f} s RSS {f['prime']['rss_mb']:.0f} MB | "
                f"silver files {d['files']}",
                flush=True,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
