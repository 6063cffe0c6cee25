"""Streaming latency and throughput as silver grows: API acknowledgement → row readable in silver, embedded log.

    python bench/stream.py [--rows 0,1000000,10000000] [--rate 1000] [--seconds 60] [--largest-seconds 300]
                           [--old 0.02]
                           [--steps 2000,5000,10000,15000] [--step-seconds 20] [--steps-at 0]
                           [--max-wait-ms 200] [--compact-every 20] [--fill-cache DIR]

For each size N (rows per kind already in silver) a fresh ``file://`` lake is filled with N rows per kind by
``bench/scale.py``'s fill (oracle-cleaned generated rows merged through ``merge_silver`` in 1M-row chunks, as a
batch run leaves silver; ``--fill-cache DIR`` keeps each filled lake in ``DIR/lake-N`` and copies it for later
runs). Then ``pinpipe api`` (embedded log) and ``pinpipe stream`` run as their own processes on 127.0.0.1, and two
load-generator processes send pin/geo/user records through the Kinesis proxy (``PUT /streams/.../records``, kinds
in turn, ~100 requests/s each) at a fixed total rate: new ``ind`` above silver's, plus ``--old`` (2 %) re-sends
with changed content of old ``ind`` drawn uniformly over the whole key range (pre-filled and sent). Each request's
acknowledgement time is noted. An observer tails the silver tables (every 10 ms it checks each ``_delta_log`` for
a new commit, loads it incrementally and reads the ``ind`` of the newly added files) and samples the worker's RSS
every second. Latency of a record = the first time its ``ind`` is in a file added after its acknowledgement − the
acknowledgement (an update counts when the rewritten file holding it lands).

Per size: p50/p99/max latency at ``--rate`` (new and updated records apart), worker RSS (start, end, max; the
mean of the last fifth of the run against the first fifth says whether it is flat) and the profile of a
micro-batch from the worker's progress lines (collect, clean, merge, batch: means and maxima). At the sizes in
``--steps-at``, one short run per ``--steps`` rate: the highest rate whose records were all readable with p99 <
1 s is the maximum sustainable rate. The same-run baseline is the empty silver (N = 0): p99 at every size is
printed as a ratio to it, with the floor of a bare delta-rs append of 100 rows. The last line is one JSON object.
Not a test: it prints figures (run it on a quiet machine, and note ``uptime``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
from deltalake import write_deltalake

from pinpipe.synth.generate import generate_records
from pinpipe.tables import KINDS

sys.path.insert(0, str(Path(__file__).parent))
import scale  # bench/scale.py: the silver fill
from stream_load import Sent, SilverObserver, free_port, latencies, load, percentile, rss_mb


def run_phase(
    port: int, pools: dict[str, list[dict[str, Any]]], job: dict[str, Any], observer: SilverObserver
) -> dict[str, float]:
    """Send at ``job["rate"]`` for ``job["seconds"]`` from two processes; wait up to 20 s for the rows."""
    queue: Any = multiprocessing.Queue()
    procs = []
    for i in range(2):
        share = {k: v[i::2] for k, v in pools.items()}
        half = {**job, "rate": job["rate"] / 2, "seed": job["seed"] * 2 + i}
        proc = multiprocessing.Process(target=load, args=(port, share, half, queue), daemon=True)
        proc.start()
        procs.append(proc)
    sent: Sent = []
    for _ in procs:
        sent.extend(queue.get(timeout=job["seconds"] + 120))
    for proc in procs:
        proc.join(10)
    tail = {(k, i) for k, i, _, u in sent[-300:] if not u}
    deadline = time.time() + 20
    while time.time() < deadline:
        seen = {(k, int(i)) for k in KINDS for _, inds in observer.added[k][-400:] for i in inds[-2000:]}
        if tail <= seen:
            break
        time.sleep(0.1)
    time.sleep(0.3)
    new, upd, missing, early = latencies(sent, observer)
    both = new + upd
    return {
        "sent": len(sent),
        "rate": len(sent) / job["seconds"],
        "missing": missing,
        "updates_seen_before_ack": early,
        "p50": percentile(both, 0.50),
        "p99": percentile(both, 0.99),
        "max": max(both, default=float("nan")),
        "new_p99": percentile(new, 0.99),
        "updates": len(upd),
        "update_p50": percentile(upd, 0.50),
        "update_p99": percentile(upd, 0.99),
    }


def _commit_floor(tmp: Path) -> float:
    table = pa.table({"ind": list(range(100)), "title": ["x" * 50] * 100})
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        write_deltalake(str(tmp / "floor"), table, mode="append")
        times.append(time.perf_counter() - t0)
    return percentile(times, 0.5)


def _pools(n: int, start: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    generated = generate_records(n, seed, start=start)
    return {k: generated[k] for k in KINDS}


def _fill(lake_dir: Path, n: int, cache: Path | None) -> float:
    """Fill ``lake_dir`` with ``n`` rows per kind (copied from the cache when it holds them); the fill's wall."""
    if n == 0:
        return 0.0
    kept = cache / f"lake-{n}" if cache else None
    if kept is not None and (kept / "silver").is_dir():
        shutil.copytree(kept, lake_dir)
        return 0.0
    target = kept or lake_dir
    target.mkdir(parents=True, exist_ok=True)
    result = scale.run_child("fill", f"file://{target}", str(n))
    if kept is not None:
        shutil.copytree(kept, lake_dir)
    return float(result["wall"])


def _profile(log_path: Path) -> dict[str, float]:
    """The worker's progress lines over the run: the mean of each ``*_ms_mean``, the max of each ``*_ms_max``."""
    means: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    for line in log_path.read_bytes().splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if doc.get("msg") != "stream progress" or "batch_ms_mean" not in doc:
            continue
        for key, value in doc.items():
            if key.endswith("_mean"):
                means.setdefault(key, []).append(float(value))
            elif key.endswith("_ms_max"):
                out[key] = max(out.get(key, 0.0), float(value))
    out.update({k: round(sum(v) / len(v), 1) for k, v in means.items()})
    return out


def measure(tmp: Path, n: int, args: argparse.Namespace, steps: list[float]) -> dict[str, Any]:
    """Fill silver with ``n`` rows per kind, start api + worker, run the main phase (and the steps)."""
    lake_dir, log_url = tmp / f"lake-{n}", f"file://{tmp / f'log-{n}'}"
    cache = Path(args.fill_cache) if args.fill_cache else None
    print(f"N={n:,}: filling silver ...", flush=True)
    fill_s = _fill(lake_dir, n, cache)
    files = {k: len(scale.table_files(f"file://{lake_dir}", k)) for k in KINDS}
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    port, metrics_port = free_port(), free_port()
    cli = [sys.executable, "-m", "pinpipe"]
    api = subprocess.Popen([*cli, "api", "--log", log_url, "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    worker: subprocess.Popen[bytes] | None = None
    log_path = tmp / f"stream-{n}.log"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit("the api did not start")
            time.sleep(0.1)
        with log_path.open("wb") as worker_log:
            worker = subprocess.Popen(
                [
                    *(*cli, "--log-format", "json", "stream", "--log", log_url, "--lake", f"file://{lake_dir}"),
                    *("--max-wait-ms", str(args.max_wait_ms), "--compact-every", args.compact_every),
                    *("--metrics-port", str(metrics_port)),
                ],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
        while b"partitions assigned" not in log_path.read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the stream worker did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        observer = SilverObserver(lake_dir, worker.pid, metrics_port)
        observer.start()
        observer.ready.wait(30)
        rss_start = rss_mb(worker.pid)
        job = {"rate": args.rate, "seconds": args.seconds, "old": args.old, "filled": n, "seed": 1}
        print(
            f"N={n:,}: {args.rate:,.0f} records/s for {args.seconds:.0f} s (worker RSS {rss_start:.0f} MB)", flush=True
        )
        pools = _pools(int(args.rate * args.seconds * 1.1) // 3 + 1000, n + 1_000_000, 7)
        started = time.time()
        main_run = run_phase(port, pools, job, observer)
        # the samples of the main run only (not the wait for the last records after it)
        rss = [r for t, r in observer.rss if t <= started + args.seconds]
        arrow = [a for t, a in observer.arrow if t <= started + args.seconds]
        fifth = max(1, len(rss) // 5)
        result: dict[str, Any] = {
            "seconds": args.seconds,
            "fill_s": fill_s,
            "files_before": files,
            "main": main_run,
            "rss_start": rss_start,
            "rss_end": rss[-1] if rss else 0.0,
            "rss_max": max(rss, default=0.0),
            "rss_first_fifth": sum(rss[:fifth]) / fifth if rss else 0.0,
            "rss_last_fifth": sum(rss[-fifth:]) / fifth if rss else 0.0,
            # one sample every 10 s: resident memory beside what Arrow's pool holds (live Arrow data)
            "rss_series": [round(r) for r in rss[::10]],
            # a leak climbs to the end; a warm-up levels off: the trend of the second half, MB per minute
            "rss_slope_second_half": _slope_per_minute(rss[len(rss) // 2 :]),
            "arrow_series": [round(a) for a in arrow[::10]],
            "profile": _profile(log_path),
            "steps": {},
        }
        for i, rate in enumerate(steps if n in args.steps_at else []):
            print(f"N={n:,}: step {rate:,.0f} records/s for {args.step_seconds:.0f} s", flush=True)
            step_pools = _pools(int(rate * args.step_seconds * 1.1) // 3 + 1000, n + 10_000_000 * (i + 2), 8 + i)
            step_job = {**job, "rate": rate, "seconds": args.step_seconds, "seed": 10 + i}
            result["steps"][str(int(rate))] = run_phase(port, step_pools, step_job, observer)
        observer.stop.set()
        return result
    finally:
        for proc in (worker, api):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if not args.keep:
            shutil.rmtree(lake_dir, ignore_errors=True)


def _slope_per_minute(samples: list[float]) -> float:
    """Least-squares slope of 1-s samples, in units per minute (0 for fewer than two)."""
    if len(samples) < 2:
        return 0.0
    return 60 * float(np.polyfit(np.arange(len(samples)), samples, 1)[0])


def _ms(x: float) -> str:
    return f"{x * 1000:7.0f}"


def report(figures: dict[str, Any], sizes: list[int], steps_at: set[int]) -> None:
    """Print the per-size table, the profiles and the rate steps; the best step goes into ``figures``."""
    base = figures["0"]["main"]["p99"]
    print(
        f"\n{'rows/kind':>11} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'x p99':>6} {'upd p99':>7} {'missing':>7}"
        f" {'RSS start/end/max MB':>21} {'RSS 1st/last fifth':>18}"
    )
    for n in sizes:
        r, m = figures[str(n)], figures[str(n)]["main"]
        print(
            f"{n:>11,} {_ms(m['p50'])} {_ms(m['p99'])} {_ms(m['max'])} {m['p99'] / base:>6.2f} {_ms(m['update_p99'])} "
            f"{m['missing']:>7,} {r['rss_start']:>7.0f}/{r['rss_end']:.0f}/{r['rss_max']:.0f} "
            f"{r['rss_first_fifth']:>9.0f}/{r['rss_last_fifth']:.0f}"
        )
    for n in sizes:
        r = figures[str(n)]
        print(
            f"memory N={n:,} every 10 s, MB: RSS {r['rss_series']}, Arrow pool {r['arrow_series']}; "
            f"RSS trend over the second half {r['rss_slope_second_half']:+.1f} MB/min"
        )
    for n in sizes:
        p = figures[str(n)]["profile"]
        parts = " ".join(
            f"{k}={p.get(k + '_ms_mean', 0):.0f}/{p.get(k + '_ms_max', 0):.0f}"
            for k in ("collect", "clean", "quarantine", "merge", "batch")
        )
        print(f"profile N={n:,} (mean/max ms per batch, {p.get('batch_records_mean', 0):.0f} records): {parts}")
    best = 0.0
    for n in sizes:
        for rate, r in figures[str(n)]["steps"].items():
            ok = r["missing"] == 0 and r["p99"] < 1.0
            print(
                f"N={n:,} step {float(rate):>8,.0f}/s: achieved {r['rate']:,.0f}/s, p50 {_ms(r['p50'])} ms, "
                f"p99 {_ms(r['p99'])} ms, missing {r['missing']} (updates seen only before their ack: "
                f"{r.get('updates_seen_before_ack', 0)}){'' if ok else '  (over)'}"
            )
            if ok and n == min(steps_at):
                best = max(best, float(rate))
    figures["max_rate_p99_under_1s"] = best
    print(f"maximum sustainable rate with p99 < 1 s: {best:,.0f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="0,1000000,10000000", help="silver sizes (rows per kind)")
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s of the main run")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the main run")
    parser.add_argument("--largest-seconds", type=float, default=None, help="the main run's length at the largest size")
    parser.add_argument("--old", type=float, default=0.02, help="share of records that update an old ind")
    parser.add_argument("--steps", default="2000,5000,10000,15000", help="rates of the short runs ('' for none)")
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--steps-at", default="0", help="sizes at which the rate steps run")
    parser.add_argument("--max-wait-ms", type=int, default=200)
    parser.add_argument("--compact-every", default="20")
    parser.add_argument("--fill-cache", default=None, help="keep filled lakes in DIR/lake-N and reuse them")
    parser.add_argument("--keep", action="store_true", help="keep the lakes and logs")
    args = parser.parse_args()
    # a SIGTERM (`kill`, a timeout) unwinds like Ctrl-C: the finally blocks stop the api and the worker
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.steps_at = {int(s) for s in args.steps_at.split(",") if s.strip()} or {0}
    steps = [float(s) for s in args.steps.split(",") if s.strip()]
    sizes = sorted({0, *(int(s) for s in args.rows.split(",") if s.strip())})  # N = 0: the same-run baseline
    tmp = Path(tempfile.mkdtemp(prefix="pinpipe-bench-stream-"))
    floor = _commit_floor(tmp)
    figures: dict[str, Any] = {"floor_append_ms": floor * 1000, "rate": args.rate, "seconds": args.seconds}
    for n in sizes:
        seconds = args.largest_seconds if n == sizes[-1] and args.largest_seconds else args.seconds
        r = figures[str(n)] = measure(tmp, n, argparse.Namespace(**{**vars(args), "seconds": seconds}), steps)
        print(f"N={n:,}: p99 {_ms(r['main']['p99'])} ms, RSS max {r['rss_max']:.0f} MB, load {os.getloadavg()}")
    report(figures, sizes, args.steps_at)
    print(f"floor: one bare delta-rs append commit of 100 rows p50 {floor * 1000:.0f} ms; load {os.getloadavg()}")
    print(f"data and logs: {tmp}")
    print(json.dumps(figures, sort_keys=True, default=float))


if __name__ == "__main__":
    main()
