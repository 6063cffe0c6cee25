"""``pinpipe stream``: the streaming job (event log → silver Delta, exactly once), one or many worker processes.

A thin shell: it parses the flags and calls :func:`pinpipe.stream.workers.run_worker` (``--workers 1``, the
default, or ``--worker-index N``) or :func:`pinpipe.stream.workers.supervise_workers` (``--workers W``), where
signals, partition sharing and exit codes are described.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from pinpipe.errors import ConfigError


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
        from pinpipe.config import load_settings

        settings = load_settings(overrides)
        if metrics_port is not None and not 0 < metrics_port < 65536:
            raise ConfigError(f"--metrics-port {metrics_port} is not a port", hint="use 1-65535")
        from pinpipe.stream.compaction import CompactSchedule
        from pinpipe.stream.workers import run_worker, supervise_workers

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
            run_worker(settings, worker_index, until_idle, metrics_port, compact_every)
        elif total == 1:
            run_worker(settings, 0, until_idle, metrics_port, compact_every)
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
            supervise_workers(argv, total)
