"""Streaming latency and throughput: API acknowledgement → row readable in silver, on the embedded log.

    .venv/bin/python bench/stream.py [--rate 1000] [--seconds 60] [--steps 2000,4000,8000] [--step-seconds 20]
                                     [--max-wait-ms 50] [--compact-every 20]

``pinpipe api`` (embedded ``file://`` log) and ``pinpipe stream`` run as their own processes on 127.0.0.1. Load
generators (two processes) send generated pin/geo/user records through the Kinesis proxy
(``PUT /streams/streaming-<prefix>-<kind>/records``, kinds in turn, ~100 requests/s per process) at a fixed
total rate, and note when each request was acknowledged. An observer tails the silver Delta tables (every 10 ms it
checks each table's ``_delta_log`` for a new commit, loads it and reads the ``ind`` of newly added files) and notes when each ``ind`` first becomes
readable. Latency = readable − acknowledged, per record. An *event* here is one record (one acknowledged row).

Phases: the main run at ``--rate`` for ``--seconds`` (p50/p99/max latency, worker RSS at start and end), then one
short run per ``--steps`` rate; the highest step whose records were all readable with p99 < 1 s is the maximum
sustainable rate. For scale, the same run times a bare delta-rs append of 100 rows (the floor of one commit).
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from pinpipe.config import DEFAULT_PREFIX
from pinpipe.synth.generate import generate_records
from pinpipe.tables import KINDS, stream_name

Sent = list[tuple[str, int, float]]  # (kind, ind, acknowledged at)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _load(port: int, records: dict[str, list[dict[str, Any]]], rate: float, seconds: float, out: Any) -> None:
    """One load generator process: ``rate`` records/s for ``seconds``, ~100 requests/s, kinds in turn."""
    sent: Sent = []
    cursor = dict.fromkeys(KINDS, 0)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        start = time.monotonic()
        done = 0
        turn = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed) - done
            if due <= 0:
                time.sleep(0.002)
                continue
            kind = KINDS[turn % 3]
            turn += 1
            chunk = records[kind][cursor[kind] : cursor[kind] + min(due, 500)]
            cursor[kind] += len(chunk)
            key = "index" if kind == "pin" else "ind"
            body = orjson.dumps({"Records": [{"Data": r, "PartitionKey": str(r[key])} for r in chunk]})
            for _attempt in range(20):  # a 503 (log busy) or a timeout is retried, as a client would
                try:
                    resp = client.put(
                        f"/streams/{stream_name(DEFAULT_PREFIX, kind)}/records",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200 and not resp.json()["FailedRecordCount"]:
                    break
                time.sleep(0.05)
            else:
                continue  # given up: these records are not counted as sent
            acked = time.time()
            sent.extend((kind, int(r[key]), acked) for r in chunk)
            done += len(chunk)
            time.sleep(0.01)
    out.put(sent)


class SilverObserver(threading.Thread):
    """Notes the first time each (kind, ind) is readable in ``<lake>/silver/<kind>``."""

    def __init__(self, lake_dir: Path) -> None:
        super().__init__(daemon=True)
        self.lake_dir = lake_dir
        self.seen: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        tables: dict[str, DeltaTable] = {}
        files: dict[str, set[str]] = {k: set() for k in KINDS}
        commits: dict[str, int] = dict.fromkeys(KINDS, -1)
        while not self.stop.is_set():
            for kind in KINDS:
                log_dir = self.lake_dir / "silver" / kind / "_delta_log"
                try:  # cheap check first: has a new commit file appeared since the last look?
                    count = sum(1 for e in os.scandir(log_dir) if e.name.endswith(".json"))
                except FileNotFoundError:
                    continue
                if count == commits[kind]:
                    continue
                commits[kind] = count
                try:
                    dt = tables.get(kind)
                    if dt is None:
                        dt = tables[kind] = DeltaTable(str(self.lake_dir / "silver" / kind))
                    else:
                        dt.update_incremental()
                except Exception:  # the table is being created
                    commits[kind] = -1
                    continue
                now = time.time()
                current = set(dt.file_uris())
                for uri in current - files[kind]:
                    for ind in pq.read_table(uri.removeprefix("file://"), columns=["ind"]).column("ind").to_pylist():
                        self.seen.setdefault((kind, ind), now)
                files[kind] = current
            time.sleep(0.01)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_phase(
    port: int, pools: dict[str, list[dict[str, Any]]], rate: float, seconds: float, observer: SilverObserver
) -> dict[str, float]:
    """Send at ``rate`` for ``seconds`` from two processes; wait up to 15 s for the rows; latency figures."""
    queue: Any = multiprocessing.Queue()
    procs = []
    for i in range(2):
        share = {k: v[i::2] for k, v in pools.items()}
        proc = multiprocessing.Process(target=_load, args=(port, share, rate / 2, seconds, queue))
        proc.start()
        procs.append(proc)
    sent: Sent = []
    for _ in procs:
        sent.extend(queue.get(timeout=seconds + 60))
    for proc in procs:
        proc.join(10)
    deadline = time.time() + 15
    while time.time() < deadline and any((k, i) not in observer.seen for k, i, _ in sent[-200:]):
        time.sleep(0.05)
    time.sleep(0.2)
    latencies = [observer.seen[(k, i)] - t for k, i, t in sent if (k, i) in observer.seen]
    return {
        "sent": len(sent),
        "rate": len(sent) / seconds,
        "missing": len(sent) - len(latencies),
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "max": max(latencies, default=float("nan")),
    }


def _commit_floor(tmp: Path) -> float:
    table = pa.table({"ind": list(range(100)), "title": ["x" * 50] * 100})
    times = []
    for i in range(30):
        t0 = time.perf_counter()
        write_deltalake(str(tmp / "floor"), table, mode="append")
        times.append(time.perf_counter() - t0)
        del i
    return _percentile(times, 0.5)


def _take(pools: dict[str, list[dict[str, Any]]], n: int) -> dict[str, list[dict[str, Any]]]:
    """The next ``n`` records (split over kinds) from the pools, removed from them."""
    per = n // 3 + 1
    out = {k: v[:per] for k, v in pools.items()}
    for k in pools:
        del pools[k][:per]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s of the main run")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--steps", default="2000,4000,8000", help="rates of the short runs ('' for none)")
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--max-wait-ms", type=int, default=50)
    parser.add_argument("--max-batch", type=int, default=5000)
    parser.add_argument("--compact-every", default="20")
    args = parser.parse_args()
    steps = [float(s) for s in args.steps.split(",") if s.strip()]
    total = int(args.rate * args.seconds + sum(r * args.step_seconds for r in steps) * 1.1) + 1000
    print(f"generating {total:,} records ...", flush=True)
    generated = generate_records(total // 3 + 1, seed=7)
    pools = {k: generated[k] for k in KINDS}

    tmp = Path(tempfile.mkdtemp(prefix="pinpipe-bench-stream-"))
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    port = _free_port()
    cli = [sys.executable, "-m", "pinpipe"]
    log_url, lake_dir = f"file://{tmp / 'log'}", tmp / "lake"
    api = subprocess.Popen([*cli, "api", "--log", log_url, "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
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
    worker_log = (tmp / "stream.log").open("wb")
    worker = subprocess.Popen(
        [
            *cli,
            "stream",
            "--log",
            log_url,
            "--lake",
            f"file://{lake_dir}",
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--max-batch",
            str(args.max_batch),
            "--compact-every",
            args.compact_every,
        ],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while b"partitions assigned" not in (tmp / "stream.log").read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None or api.poll() is not None:
                raise SystemExit(f"the stream worker did not start: {(tmp / 'stream.log').read_text()[-2000:]}")
            time.sleep(0.05)
        observer = SilverObserver(lake_dir)
        observer.start()
        floor = _commit_floor(tmp)
        rss_start = _rss_mb(worker.pid)
        print(
            f"main run: {args.rate:,.0f} records/s for {args.seconds:.0f} s (worker RSS {rss_start:.0f} MB)", flush=True
        )
        main_run = run_phase(port, _take(pools, int(args.rate * args.seconds * 1.1)), args.rate, args.seconds, observer)
        rss_end = _rss_mb(worker.pid)
        results = [(args.rate, main_run)]
        for rate in steps:
            print(f"step: {rate:,.0f} records/s for {args.step_seconds:.0f} s", flush=True)
            results.append(
                (
                    rate,
                    run_phase(
                        port, _take(pools, int(rate * args.step_seconds * 1.1)), rate, args.step_seconds, observer
                    ),
                )
            )
        rss_final = _rss_mb(worker.pid)
        observer.stop.set()
    finally:
        for proc in (worker, api):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        worker_log.close()

    print()
    print(
        f"{'records/s asked':>16} {'achieved':>9} {'sent':>8} {'missing':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for rate, r in results:
        print(
            f"{rate:>16,.0f} {r['rate']:>9,.0f} {r['sent']:>8,.0f} {r['missing']:>8,.0f} "
            f"{r['p50'] * 1000:>8.0f} {r['p99'] * 1000:>8.0f} {r['max'] * 1000:>8.0f}"
        )
    ok = [rate for rate, r in results if r["missing"] == 0 and r["p99"] < 1.0]
    print()
    print(
        f"main run: p50 {main_run['p50'] * 1000:.0f} ms, p99 {main_run['p99'] * 1000:.0f} ms "
        f"(target p99 < 1000 ms) at {main_run['rate']:,.0f} records/s"
    )
    print(f"maximum sustainable rate with p99 < 1 s: {max(ok, default=0):,.0f} records/s")
    print(
        f"worker RSS: {rss_start:.0f} MB at start, {rss_end:.0f} MB after the main run, {rss_final:.0f} MB at the end"
    )
    print(
        f"floor: one bare delta-rs append commit of 100 rows p50 {floor * 1000:.0f} ms; "
        f"main-run p50 / floor = {main_run['p50'] / floor:.1f}x"
    )
    print(f"data and logs: {tmp}")


if __name__ == "__main__":
    main()
