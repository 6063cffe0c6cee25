"""The emulator's own ceiling: how fast ``pinpipe emulate`` can send when the server costs (almost) nothing.

    .venv/bin/python bench/emulator.py [--selections 4000] [--concurrency 32] [--batch-selections 20000]

Serves bench/ingest.py's raw ASGI no-op app (same uvicorn settings as ``pinpipe api``) in its own process on
loopback, loads the bundled sample into a SQLite source (not timed), then runs the emulator (the same
:func:`pinpipe.emulate.emulator.emulate` that ``pinpipe emulate`` runs, in this process) against the no-op: one
record per request and 100 records per request, batch dialect, with a send log as the demo keeps one. In the
same run, the same no-op is driven by bench/ingest.py's raw load generator (same connection count) — the rate
the server side allows, so the emulator's ratio to it says whether the emulator or the no-op is the bound.

Reading: the emulator must send faster than ``pinpipe api`` can take (bench/ingest.py: its single-record
requests/s and durable records/s at 100 records/request), or it would be the bottleneck of the demo and of any
end-to-end measurement. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import ingest as ingest_bench  # noqa: E402  (bench/ingest.py: the no-op server and the raw load generator)


def run_emulator(port: int, db: str, selections: int, per_request: int, concurrency: int, send_log: Path) -> dict:
    from pinpipe.emulate.emulator import EmulateOptions, emulate

    opts = EmulateOptions(
        dialect="batch",
        api=f"http://127.0.0.1:{port}",
        db_url=db,
        count=selections,
        concurrency=concurrency,
        records_per_request=per_request,
        send_log=send_log,
    )
    cpu0 = time.process_time()
    summary = emulate(opts)
    cpu = time.process_time() - cpu0
    assert not summary.requests_failed, summary
    return {
        "requests_per_s": summary.requests / summary.elapsed_s,
        "records_per_s": summary.records_acked / summary.elapsed_s,
        "requests": summary.requests,
        "cpu_us_per_request": cpu / summary.requests * 1e6,
        "elapsed_s": summary.elapsed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--selections", type=int, default=4000, help="posts at 1 record/request (3 requests each)")
    parser.add_argument("--batch-selections", type=int, default=20000, help="posts at 100 records/request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of the raw load generator's runs")
    args = parser.parse_args()
    from tests.fixtures.services import free_port

    with tempfile.TemporaryDirectory(prefix="pinpipe-bench-emulate-") as tmp:
        db = f"sqlite:///{tmp}/source.db"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        subprocess.run([sys.executable, "-m", "pinpipe", "source", "init", "--db", db], check=True, env=env)
        port = free_port()
        server = ingest_bench._start([ingest_bench.__file__, "--serve-noop", str(port)], port)
        try:
            path = f"/topics/{ingest_bench.TOPIC}"
            ingest_bench.drive(port, path, 1, 1.0, args.concurrency, 1, server.pid)  # warm-up
            raw_single = ingest_bench.drive(port, path, 1, args.seconds, args.concurrency, 1, server.pid)
            emu_single = run_emulator(port, db, args.selections, 1, args.concurrency, Path(tmp) / "s1.jsonl")
            raw_batch = ingest_bench.drive(port, path, 100, args.seconds, 16, 1, server.pid)
            emu_batch = run_emulator(port, db, args.batch_selections, 100, 16, Path(tmp) / "s100.jsonl")
        finally:
            server.terminate()
            server.wait(30)

    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"1 record/request   : emulator {emu_single['requests_per_s']:9,.0f} req/s "
        f"({emu_single['cpu_us_per_request']:.0f} us CPU/request incl. reading the source); raw load generator {raw_single['requests_per_s']:9,.0f}"
        f" req/s -> ratio {emu_single['requests_per_s'] / raw_single['requests_per_s']:.2f}"
    )
    print(
        f"100 records/request: emulator {emu_batch['records_per_s']:9,.0f} records/s "
        f"({emu_batch['cpu_us_per_request']:.0f} us CPU/request incl. reading the source); raw load generator "
        f"{raw_batch['records_per_s']:9,.0f} records/s -> ratio {emu_batch['records_per_s'] / raw_batch['records_per_s']:.2f}"
    )
    print(
        json.dumps(
            {
                "bench": "emulator",
                "single_requests_per_s": round(emu_single["requests_per_s"]),
                "single_cpu_us_per_request": round(emu_single["cpu_us_per_request"], 1),
                "raw_single_requests_per_s": round(raw_single["requests_per_s"]),
                "batch_records_per_s": round(emu_batch["records_per_s"]),
                "batch_cpu_us_per_request": round(emu_batch["cpu_us_per_request"], 1),
                "raw_batch_records_per_s": round(raw_batch["records_per_s"]),
                "load_average": [round(x, 2) for x in load],
            }
        )
    )


if __name__ == "__main__":
    main()
