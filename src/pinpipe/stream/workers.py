"""How ``pinpipe stream`` runs: one worker in this process (:func:`run_worker`), or this process supervising
``--workers W`` worker processes (:func:`supervise_workers`).

Who calls what: :mod:`pinpipe.cli.stream_cmd` parses the flags and calls one of the two. A supervisor starts W
processes (``pinpipe stream ... --worker-index 0..W-1``), passes SIGTERM/Ctrl-C on to them and exits when they have
all stopped; if one fails, the others are stopped too and the exit code is the failed one's. How partitions are
shared is the log's (:meth:`~pinpipe.log.base.EventLog.consume`): a consumer group on Kafka, DynamoDB leases with
``--leases``, a static split otherwise (each worker's metrics port is ``--metrics-port`` + its index).

Signals: the first SIGTERM/SIGINT lets the micro-batch in flight finish and commit, then stops; a second one
stops at once (the uncommitted batch is dropped; a restart reads it again).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from pinpipe.config import Settings
from pinpipe.engine import open_engine
from pinpipe.lake.store import open_lake
from pinpipe.stream.compaction import Compactor, CompactSchedule
from pinpipe.stream.memory import choose_arrow_pool
from pinpipe.stream.worker import StreamOptions, StreamWorker, open_feed
from pinpipe.telemetry.logs import get_logger
from pinpipe.telemetry.stream import StreamMetrics

log = get_logger("stream.workers")


def _install_stop(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("stop requested; finishing the batch in flight", extra={"fields": {"signal": signum}})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_worker(
    settings: Settings,
    worker_index: int,
    until_idle: bool,
    metrics_port: int | None,
    compact_every: str | None,
) -> None:
    s = settings.stream
    arrow_pool = choose_arrow_pool()  # before anything allocates from Arrow's pool
    schedule = CompactSchedule.parse(compact_every)
    lake = open_lake(settings.lake.url, settings.lake, access="write")
    lake.table_uri("silver")  # fails early on a lake that cannot hold Delta tables
    stop = threading.Event()
    _install_stop(stop)
    metrics = StreamMetrics()
    if metrics_port:
        metrics.serve(metrics_port + worker_index, settings.metrics.host)
    options = StreamOptions(
        prefix=settings.prefix,
        max_batch=s.max_batch,
        max_wait_ms=s.max_wait_ms,
        idle_stop_s=max(2.0, 5 * s.max_wait_ms / 1000) if until_idle else None,
    )
    log.info(
        "stream worker starting",
        extra={
            "fields": {
                "log": settings.log.url,
                "lake": settings.lake.url,
                "worker": f"{worker_index + 1}/{s.workers}",
                "max_batch": s.max_batch,
                "max_wait_ms": s.max_wait_ms,
                "compact_every": compact_every,
                "arrow_pool": arrow_pool,
            }
        },
    )
    feed = open_feed(settings.log.url, settings.prefix, s.group, worker_index, s.workers, s.leases, s.lease_seconds)
    try:
        with open_engine("duckdb", sql_cache=settings.batch.sql_cache) as engine:
            compactor = Compactor(lake, schedule) if schedule else None
            StreamWorker(feed, lake, engine, options, metrics, compactor).run(stop)
    finally:
        feed.close()


def supervise_workers(argv: list[str], workers: int) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "from pinpipe.cli import main; main()", *argv, "--worker-index", str(i)]
        )
        for i in range(workers)
    ]
    stop = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed: int | None = None
    while any(p.poll() is None for p in procs):
        for proc in procs:
            code = proc.poll()
            if code not in (None, 0) and failed is None:
                failed = code
                log.error("a stream worker failed; stopping the others", extra={"fields": {"exit_code": code}})
                for other in procs:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    failed = failed or next((c for c in codes if c), None)
    if failed:
        raise SystemExit(failed)
