"""``pinpipe stream``: the streaming job (event log → silver Delta, exactly once), one or many worker processes.

A thin shell over :mod:`pinpipe.stream.worker`. With ``--workers 1`` (default) the job runs in this process. With
``--workers W`` this process becomes a supervisor: it starts W worker processes (``--worker-index 0..W-1``), passes
SIGTERM/Ctrl-C on to them and exits when they have all stopped (if one fails, the others are stopped too and the
exit code is the failed one's). How partitions are shared: on ``kafka://`` logs all workers join one consumer
group (``--group``) and Kafka rebalances when one leaves; on other logs the split is static (see
:mod:`pinpipe.log.feed`) and each worker's metrics port is ``--metrics-port`` + its index.

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
from typing import Annotated, Any

import typer

from pinpipe.config import Settings, load_settings
from pinpipe.errors import ConfigError
from pinpipe.telemetry.logs import get_logger

log = get_logger("cli.stream")


def _install_stop(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("stop requested; finishing the batch in flight", extra={"fields": {"signal": signum}})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run_worker(
    settings: Settings,
    worker_index: int,
    until_idle: bool,
    metrics_port: int | None,
    compact_every: str | None,
) -> None:
    from pinpipe.engine import open_engine
    from pinpipe.lake.store import open_lake
    from pinpipe.stream.compaction import Compactor, CompactSchedule
    from pinpipe.stream.worker import StreamOptions, StreamWorker, open_feed
    from pinpipe.telemetry.stream import StreamMetrics

    s = settings.stream
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
            }
        },
    )
    feed = open_feed(settings.log.url, settings.prefix, s.group, worker_index, s.workers, s.leases, s.lease_seconds)
    try:
        with open_engine("duckdb") as engine:
            compactor = Compactor(lake, schedule) if schedule else None
            StreamWorker(feed, lake, engine, options, metrics, compactor).run(stop)
    finally:
        feed.close()


def _supervise(argv: list[str], workers: int) -> None:
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


def register(app: typer.Typer) -> None:
    @app.command("stream")
    def stream_command(
        log_url: Annotated[
            str | None, typer.Option("--log", help="Event log: a path or URL; it must exist (default: log.url).")
        ] = None,
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        max_batch: Annotated[
            int | None, typer.Option("--max-batch", help="Records per micro-batch at most (stream.max_batch).")
        ] = None,
        max_wait_ms: Annotated[
            int | None,
            typer.Option("--max-wait-ms", help="Commit a micro-batch this long after its first record."),
        ] = None,
        workers: Annotated[int | None, typer.Option("--workers", help="Worker processes (stream.workers).")] = None,
        worker_index: Annotated[
            int | None, typer.Option("--worker-index", help="Run only worker N of --workers (0-based).", hidden=True)
        ] = None,
        group: Annotated[str | None, typer.Option("--group", help="Consumer group (stream.group).")] = None,
        leases: Annotated[
            str | None,
            typer.Option(
                "--leases",
                help="Share partitions with workers on other machines through DynamoDB leases: "
                "dynamodb://TABLE[?region=R&endpoint=URL] (stream.leases).",
            ),
        ] = None,
        lease_seconds: Annotated[
            float | None, typer.Option("--lease-seconds", help="Lease expiry (stream.lease_seconds).")
        ] = None,
        prefix: Annotated[str | None, typer.Option("--prefix", help="Topic prefix (prefix setting).")] = None,
        until_idle: Annotated[
            bool,
            typer.Option("--until-idle", metavar="", help="Exit once no new record has arrived for a few seconds."),
        ] = False,
        metrics_port: Annotated[
            int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on --metrics-host:PORT(+index).")
        ] = None,
        metrics_host: Annotated[
            str | None, typer.Option("--metrics-host", help="Bind address of /metrics (metrics.host: 127.0.0.1).")
        ] = None,
        compact_every: Annotated[
            str,
            typer.Option("--compact-every", help="Compact silver every N batches, every Ns seconds, or 'off'."),
        ] = "20",
    ) -> None:
        """Stream the event log into the silver Delta tables, exactly once (micro-batches, same cleaning as batch)."""
        overrides: dict[str, Any] = {
            "prefix": prefix,
            "log": {"url": log_url},
            "lake": {"url": lake_url},
            "stream": {
                "max_batch": max_batch,
                "max_wait_ms": max_wait_ms,
                "workers": workers,
                "group": group,
                "leases": leases,
                "lease_seconds": lease_seconds,
            },
            "metrics": {"host": metrics_host},
        }
        settings = load_settings(overrides)
        if metrics_port is not None and not 0 < metrics_port < 65536:
            raise ConfigError(f"--metrics-port {metrics_port} is not a port", hint="use 1-65535")
        from pinpipe.stream.compaction import CompactSchedule

        CompactSchedule.parse(compact_every)  # validate before starting anything
        total = settings.stream.workers
        if worker_index is None:  # check the locations once, before any worker starts
            from pinpipe.lake.store import open_lake
            from pinpipe.log import locate_log

            locate_log(settings.log.url, "read")
            open_lake(settings.lake.url, settings.lake, access="write").table_uri("silver")
        if worker_index is not None:
            if not 0 <= worker_index < total:
                raise ConfigError(f"--worker-index {worker_index} outside 0..{total - 1}", hint="check --workers")
            _run_worker(settings, worker_index, until_idle, metrics_port, compact_every)
        elif total == 1:
            _run_worker(settings, 0, until_idle, metrics_port, compact_every)
        else:
            root = sys.argv[1 : sys.argv.index("stream")] if "stream" in sys.argv else []
            argv = [
                *root,
                "stream",
                *("--log", settings.log.url, "--lake", settings.lake.url, "--prefix", settings.prefix),
                *("--max-batch", str(settings.stream.max_batch), "--max-wait-ms", str(settings.stream.max_wait_ms)),
                *("--workers", str(total), "--group", settings.stream.group, "--compact-every", compact_every),
                *(["--until-idle"] if until_idle else []),
                *(["--metrics-port", str(metrics_port)] if metrics_port else []),
                *(["--leases", settings.stream.leases] if settings.stream.leases else []),
                *("--lease-seconds", str(settings.stream.lease_seconds)),
                *("--metrics-host", settings.metrics.host),
            ]
            _supervise(argv, total)
