"""``pinpipe sink``: land the event log in the lake (Confluent S3 sink layout), exactly once.

A thin shell over :class:`pinpipe.lake.sink.LakeSink`: it builds the settings from the flags, opens the log (which
must exist: ``pinpipe api`` creates it) and the lake (created if missing, under an existing parent directory), installs SIGTERM/SIGINT handlers (the first one stops the sink cleanly — it writes and commits what it
holds; a second one interrupts at once, leaving that uncommitted, which a restart lands again) and runs it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated, Any

import typer

from pinpipe.errors import ConfigError


def _topics(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise ConfigError("--topics names no topic", hint="give topic names, e.g. --topics 0affea73130b.pin")
    return names


def register(app: typer.Typer) -> None:
    @app.command("sink")
    def sink_command(
        log_url: Annotated[
            str | None,
            typer.Option("--log", help="Event log: a path or URL; it must exist (default: the log.url setting)."),
        ] = None,
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        flush_records: Annotated[
            int | None, typer.Option("--flush-records", help="Records per object at most (sink.flush_records).")
        ] = None,
        flush_seconds: Annotated[
            float | None,
            typer.Option("--flush-seconds", help="Write a partial object this long after its first record."),
        ] = None,
        until_idle: Annotated[
            bool,
            typer.Option(
                "--until-idle", metavar="", help="Exit once no partition has had a new record for --flush-seconds."
            ),
        ] = False,
        topics: Annotated[
            list[str] | None,
            typer.Option("--topics", help="Topics to land (repeat or comma-separate; default: every topic)."),
        ] = None,
        group: Annotated[str | None, typer.Option("--group", help="Consumer group (sink.group).")] = None,
        metrics_port: Annotated[
            int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on --metrics-host:PORT.")
        ] = None,
        metrics_host: Annotated[
            str | None, typer.Option("--metrics-host", help="Bind address of /metrics (metrics.host: 127.0.0.1).")
        ] = None,
    ) -> None:
        """Land every record of the event log in the lake: topics/<topic>/partition=<p>/<topic>+<p>+<offset>.json."""
        from pinpipe.lake.sink import LakeSink
        from pinpipe.lake.store import open_lake
        from pinpipe.log import open_log
        from pinpipe.telemetry.sink import SinkMetrics

        overrides: dict[str, Any] = {
            "log": {"url": log_url},
            "lake": {"url": lake_url},
            "sink": {"flush_records": flush_records, "flush_seconds": flush_seconds, "group": group},
            "metrics": {"host": metrics_host},
        }
        from pinpipe.config import load_settings

        settings = load_settings(overrides)
        if metrics_port is not None and not 0 < metrics_port < 65536:
            raise ConfigError(f"--metrics-port {metrics_port} is not a port", hint="use 1-65535")
        wanted = _topics(topics)
        metrics = SinkMetrics() if metrics_port else None
        with open_log(settings.log.url, access="read") as event_log:
            lake = open_lake(settings.lake.url, settings.lake, access="write")
            sink = LakeSink(
                event_log,
                lake,
                group=settings.sink.group,
                flush_records=settings.sink.flush_records,
                flush_seconds=settings.sink.flush_seconds,
                topics=wanted,
                metrics=metrics,
            )
            if metrics and metrics_port:
                metrics.serve(metrics_port, settings.metrics.host)
            stop = threading.Event()
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

            def _on_signal(signum: int, frame: FrameType | None) -> None:
                if stop.is_set():
                    raise KeyboardInterrupt
                stop.set()

            for sig in previous:
                signal.signal(sig, _on_signal)
            try:
                sink.run(until_idle=until_idle, stop=stop)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
