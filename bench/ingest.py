"""Ingestion API benchmark on the embedded (fsync'd) log, loopback only, bounded duration.

Usage: ``.venv/bin/python bench/ingest.py [--seconds 8] [--connections 32] [--loaders 1]``

Starts the API in its own process (uvicorn + uvloop + httptools, one worker, collector tuned as ``pinpipe api``
does) with an extra no-op route
(``POST /noop/{topic}``: reads the body, answers a constant 200 through the same middleware), then drives it from
separate load-generator processes using pinpipe's raw keep-alive client (:mod:`pinpipe.emulate.client`). Prints:

1. single-record requests/s to ``/topics/<prefix>.geo``, and as a ratio to the no-op route (target >= 0.7);
2. durably acknowledged records/s at 100 records per request (target >= 100,000);
3. the API process's peak RSS (VmHWM; target < 300 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastapi import Request, Response

GEO = {
    "ind": 7528,
    "timestamp": "2020-08-28 03:52:47",
    "latitude": -89.9787,
    "longitude": -173.293,
    "country": "Albania",
}
TOPIC = "0affea73130b.geo"
HEADERS = {"Content-Type": "application/vnd.kafka.json.v2+json"}


def serve(port: int, log_dir: str) -> None:
    """The API process: the real app plus a no-op route for the baseline."""
    import uvicorn

    from pinpipe.config import load_settings
    from pinpipe.ingest.app import create_app
    from pinpipe.ingest.serving import tune_gc_for_serving

    app = create_app(load_settings({"log": {"url": f"file://{log_dir}"}}))
    body = b'{"offsets":[{"partition":0,"offset":0,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}'

    @app.post("/noop/{topic}", include_in_schema=False)
    async def noop(topic: str, request: Request) -> Response:
        await request.body()
        return Response(body, media_type="application/vnd.kafka.v2+json")

    tune_gc_for_serving()  # as `pinpipe api` does
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


def _load(port: int, path: str, payload: bytes, seconds: float, connections: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import uvloop

    from pinpipe.emulate.client import HttpConnection

    async def run() -> tuple[int, int, list[float]]:
        ok = bad = 0
        lat: list[float] = []
        stop = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal ok, bad
            conn = HttpConnection(f"http://127.0.0.1:{port}")
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                answer = await conn.request("POST", path, HEADERS, payload)
                lat.append(time.perf_counter() - t0)
                if answer.status == 200:
                    ok += 1
                else:
                    bad += 1
            await conn.close()

        await asyncio.gather(*(worker() for _ in range(connections)))
        return ok, bad, lat

    ok, bad, lat = uvloop.run(run())
    lat.sort()
    queue.put((ok, bad, lat[len(lat) // 2] if lat else 0.0, lat[int(len(lat) * 0.99)] if lat else 0.0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(
    port: int, path: str, records: int, seconds: float, connections: int, loaders: int, server_pid: int
) -> dict[str, float]:
    """Load ``path`` from ``loaders`` processes for ``seconds``; answer rates, latency and the server's CPU."""
    payload = json.dumps({"records": [{"value": {**GEO, "ind": i}} for i in range(records)]}, default=str).encode()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_load, args=(port, path, payload, seconds, connections // loaders, queue))
        for _ in range(loaders)
    ]
    for proc in procs:
        proc.start()
    cpu0 = cpu_seconds(server_pid)
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    cpu = cpu_seconds(server_pid) - cpu0
    for proc in procs:
        proc.join()
    ok = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    return {
        "requests_per_s": ok / seconds,
        "records_per_s": ok * records / seconds,
        "errors": bad,
        "p50_ms": max(r[2] for r in results) * 1000,
        "p99_ms": max(r[3] for r in results) * 1000,
        "cpu_us_per_request": cpu / max(ok + bad, 1) * 1e6,
        "server_cores": cpu / seconds,
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loaders", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="no-op/single rounds; the median ratio is shown")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.log_dir)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.services import free_port, wait_for_port

    with tempfile.TemporaryDirectory(prefix="pinpipe-bench-") as tmp:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--log-dir", f"{tmp}/log"],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            wait_for_port(port, 30, server)
            load = (args.connections, args.loaders, server.pid)
            drive(port, f"/topics/{TOPIC}", 1, 1.0, *load)  # warm-up
            rounds = []
            for _ in range(args.rounds):  # interleaved, so background load hits both alike
                noop = drive(port, f"/noop/{TOPIC}", 1, args.seconds, *load)
                single = drive(port, f"/topics/{TOPIC}", 1, args.seconds, *load)
                rounds.append((single["requests_per_s"] / noop["requests_per_s"], noop, single))
            rounds.sort(key=lambda r: r[0])
            ratio, noop, single = rounds[len(rounds) // 2]
            batch = drive(port, f"/topics/{TOPIC}", 100, args.seconds, max(8, args.connections // 2), *load[1:])
            rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)

    def line(name: str, r: dict[str, float]) -> str:
        return (
            f"{name:<20}: {r['requests_per_s']:9,.0f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
            f"server CPU {r['cpu_us_per_request']:.0f} us/request ({r['server_cores']:.2f} cores)"
        )

    print(line("no-op endpoint", noop))
    print(line("1 record/request", single))
    print(
        f"  ratio to no-op    : {ratio:.2f} (target >= 0.7; rounds {', '.join(f'{r[0]:.2f}' for r in rounds)}); "
        f"by server CPU per request {noop['cpu_us_per_request'] / single['cpu_us_per_request']:.2f}"
    )
    print(line("100 records/request", batch))
    print(
        f"  durable records/s : {batch['records_per_s']:9,.0f} (target >= 100,000); "
        f"server CPU {batch['cpu_us_per_request'] / 100:.1f} us/record"
    )
    print(f"API peak RSS        : {rss:9.1f} MB (target < 300)")
    print(f"errors              : {int(noop['errors'] + single['errors'] + batch['errors'])}")


if __name__ == "__main__":
    main()
