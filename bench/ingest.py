"""Ingestion API benchmark on the embedded (fsync'd) log, loopback only, bounded duration.

Usage: ``.venv/bin/python bench/ingest.py [--seconds 4] [--connections 32] [--loaders 1] [--rounds 3]``

Starts two servers, each in its own process, with the same uvicorn settings (one process, uvloop, the guarded
httptools protocol: :func:`pinpipe.ingest.serving.uvicorn_config`) and the same collector tuning:

- the real API, as ``pinpipe api --log file://<tmp>`` starts it (the embedded log fsyncs before every 2xx);
- the baseline: a raw ASGI no-op app (``async def app(scope, receive, send)``: reads the body, answers 200 with
  a constant produce answer), so the ratio measures what the API does beyond what uvicorn costs.

It drives them from separate load-generator processes using pinpipe's raw keep-alive client
(:mod:`pinpipe.emulate.client`), rounds interleaved so background load hits both alike, and prints:

1. single-record requests/s to ``/topics/<prefix>.geo`` and the ratio to the raw no-op (target >= 0.7);
2. durably acknowledged records/s at 100 records per request (target >= 200,000);
3. the API process's peak RSS (VmHWM; target < 300 MB).

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GEO = {
    "ind": 7528,
    "timestamp": "2020-08-28 03:52:47",
    "latitude": -89.9787,
    "longitude": -173.293,
    "country": "Albania",
}
TOPIC = "0affea73130b.geo"
HEADERS = {"Content-Type": "application/vnd.kafka.json.v2+json"}
NOOP_BODY = b'{"offsets":[{"partition":0,"offset":0,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}'
NOOP_HEADERS = [(b"content-type", b"application/vnd.kafka.v2+json"), (b"content-length", b"%d" % len(NOOP_BODY))]


async def noop_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: the least an ASGI app can do for a produce request (drain the body, answer 200)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": NOOP_HEADERS})
    await send({"type": "http.response.body", "body": NOOP_BODY})


def serve_noop(port: int) -> None:
    """The baseline's process: ``noop_app`` under exactly the API's uvicorn settings."""
    import uvicorn

    from pinpipe.config import load_settings
    from pinpipe.ingest.serving import bind, tune_gc_for_serving, uvicorn_config
    from pinpipe.telemetry.ingest import ApiMetrics

    settings = load_settings({"api": {"port": port}})
    sock = bind("127.0.0.1", port)
    config = uvicorn_config(noop_app, settings, ApiMetrics())
    tune_gc_for_serving()  # as `pinpipe api` does
    uvicorn.Server(config).run(sockets=[sock])


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


def fsync_latency_ms(directory: str, samples: int = 200) -> tuple[float, float]:
    """p50 and p90 of ``fdatasync`` after a 4 KiB append in ``directory`` (the log's disk, at this moment): a
    durable API answers no faster than its group commit's fsync."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    took = []
    try:
        for _ in range(samples):
            os.write(fd, b"x" * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            took.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.9)]


def _start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    from tests.fixtures.services import wait_for_port

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, *argv], env=env)
    try:
        wait_for_port(port, 30, proc)
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc


ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loaders", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="no-op/single rounds; the median ratio is shown")
    parser.add_argument("--batch-connections", type=int, default=16)
    parser.add_argument("--serve-noop", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_noop:
        serve_noop(args.serve_noop)
        return
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.services import free_port

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwind: the servers stop
    with tempfile.TemporaryDirectory(prefix="pinpipe-bench-") as tmp:
        api_port, noop_port = free_port(), free_port()
        servers: list[subprocess.Popen[bytes]] = []
        try:
            api = _start(["-m", "pinpipe", "api", "--port", str(api_port), "--log", f"file://{tmp}/log"], api_port)
            servers.append(api)
            noop_server = _start([__file__, "--serve-noop", str(noop_port)], noop_port)
            servers.append(noop_server)
            at_api = (args.connections, args.loaders, api.pid)
            at_noop = (args.connections, args.loaders, noop_server.pid)
            drive(api_port, f"/topics/{TOPIC}", 1, 1.0, *at_api)  # warm-up
            drive(noop_port, f"/topics/{TOPIC}", 1, 1.0, *at_noop)
            rounds = []
            for _ in range(args.rounds):  # interleaved, so background load hits both alike
                noop = drive(noop_port, f"/topics/{TOPIC}", 1, args.seconds, *at_noop)
                single = drive(api_port, f"/topics/{TOPIC}", 1, args.seconds, *at_api)
                rounds.append((single["requests_per_s"] / noop["requests_per_s"], noop, single))
            rounds.sort(key=lambda r: r[0])
            ratio, noop, single = rounds[len(rounds) // 2]
            batch = drive(api_port, f"/topics/{TOPIC}", 100, args.seconds, args.batch_connections, *at_api[1:])
            rss = peak_rss_mb(api.pid)
            fsync_p50, fsync_p90 = fsync_latency_ms(tmp)
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(30)

    def line(name: str, r: dict[str, float]) -> str:
        return (
            f"{name:<22}: {r['requests_per_s']:9,.0f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
            f"server CPU {r['cpu_us_per_request']:.0f} us/request ({r['server_cores']:.2f} cores)"
        )

    load = os.getloadavg()
    print(f"load average before/at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(line("raw ASGI no-op", noop))
    print(line("API, 1 record/request", single))
    print(
        f"  ratio to raw no-op    : {ratio:.2f} (target >= 0.7; rounds {', '.join(f'{r[0]:.2f}' for r in rounds)}); "
        f"by server CPU per request {noop['cpu_us_per_request'] / single['cpu_us_per_request']:.2f}"
    )
    print(line("API, 100 records/req.", batch))
    print(
        f"  durable records/s     : {batch['records_per_s']:9,.0f} (target >= 200,000); "
        f"server CPU {batch['cpu_us_per_request'] / 100:.1f} us/record"
    )
    print(f"API peak RSS          : {rss:9.1f} MB (target < 300)")
    print(f"fdatasync on the log's disk after the run: p50 {fsync_p50:.2f} ms, p90 {fsync_p90:.2f} ms")
    errors = int(noop["errors"] + single["errors"] + batch["errors"])
    print(f"errors                : {errors}")
    print(
        json.dumps(
            {
                "bench": "ingest",
                "noop_requests_per_s": round(noop["requests_per_s"]),
                "single_requests_per_s": round(single["requests_per_s"]),
                "single_to_noop": round(ratio, 3),
                "single_to_noop_rounds": [round(r[0], 3) for r in rounds],
                "noop_server_us_per_request": round(noop["cpu_us_per_request"], 1),
                "single_server_us_per_request": round(single["cpu_us_per_request"], 1),
                "single_p99_ms": round(single["p99_ms"], 1),
                "batch_records_per_s": round(batch["records_per_s"]),
                "batch_p99_ms": round(batch["p99_ms"], 1),
                "batch_server_us_per_record": round(batch["cpu_us_per_request"] / 100, 2),
                "api_peak_rss_mb": round(rss, 1),
                "fsync_p50_ms": round(fsync_p50, 3),
                "fsync_p90_ms": round(fsync_p90, 3),
                "errors": errors,
                "load_average": [round(x, 2) for x in load],
            }
        )
    )


if __name__ == "__main__":
    main()
