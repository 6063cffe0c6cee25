"""``pinpipe api`` (the ingestion API under uvicorn) and ``pinpipe emulate`` (the user emulator)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import orjson
import typer


def register(app: typer.Typer) -> None:
    @app.command("api")
    def api_command(
        host: Annotated[
            str | None, typer.Option(help="Bind address (default 127.0.0.1; others need --api-key).")
        ] = None,
        port: Annotated[
            int | None, typer.Option(help="Port (default 8082, as the REST proxy; 0: any free port).")
        ] = None,
        root_path: Annotated[str | None, typer.Option("--root-path", help="Stage prefix served, e.g. /test.")] = None,
        log_url: Annotated[
            str | None, typer.Option("--log", help="Event log URL (default file://pinpipe-data/log).")
        ] = None,
        api_key: Annotated[str | None, typer.Option("--api-key", help="Require this X-API-Key header.")] = None,
    ) -> None:
        """Serve the ingestion API: Kafka REST v2 (POST /topics/...) and the Kinesis proxy (PUT /streams/...)."""
        from pinpipe.config import load_settings
        from pinpipe.ingest.app import create_app
        from pinpipe.ingest.auth import check_startup
        from pinpipe.ingest.serving import bind, serve, tune_gc_for_serving
        from pinpipe.telemetry.logs import get_logger

        settings = load_settings(
            {"api": {"host": host, "port": port, "root_path": root_path, "api_key": api_key}, "log": {"url": log_url}}
        )
        check_startup(settings)  # a missing API key off loopback fails before the port is taken
        sock = bind(settings.api.host, settings.api.port)  # a port in use fails here, before anything is ready
        application = create_app(settings)
        get_logger("ingest").info(
            "listening", extra={"fields": {"host": settings.api.host, "port": sock.getsockname()[1]}}
        )
        tune_gc_for_serving()
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, restores the previous handlers and re-raises the signal;
        # with these handlers installed that re-raise is recorded instead of killing the process, so a clean stop
        # exits 0 (every acknowledged record was durable before its 2xx).
        stopped_by: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: stopped_by.append(signum))
        serve(application, settings, sock)
        if stopped_by:
            get_logger("ingest").info("stopped", extra={"fields": {"signal": signal.Signals(stopped_by[0]).name}})

    @app.command("emulate")
    def emulate_command(
        dialect: Annotated[str, typer.Option(help="batch (Kafka REST) or stream (Kinesis proxy).")] = "batch",
        api: Annotated[str, typer.Option(help="Base URL of the API, e.g. http://127.0.0.1:8082 or .../test.")] = (
            "http://127.0.0.1:8082"
        ),
        db: Annotated[str | None, typer.Option("--db", help="Source database URL (default: source.url).")] = None,
        count: Annotated[int, typer.Option(help="Selections to send (each is one pin, geo and user record).")] = 100,
        rate: Annotated[float, typer.Option(help="Requests per second at most; 0 = as fast as possible.")] = 0.0,
        seed: Annotated[int, typer.Option(help="Random seed (100 reproduces the original).")] = 100,
        concurrency: Annotated[int, typer.Option(help="Requests in flight (one connection each).")] = 8,
        records_per_request: Annotated[int, typer.Option("--records-per-request", help="Records per request.")] = 1,
        send_log: Annotated[Path | None, typer.Option("--send-log", help="Append a JSONL send log here.")] = None,
        api_key: Annotated[str | None, typer.Option("--api-key", help="X-API-Key to send.")] = None,
        as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Pick rows as the original emulator did and send them to the ingestion API."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from pinpipe.cli import console, err_console
        from pinpipe.emulate.emulator import EmulateOptions, emulate

        if dialect not in ("batch", "stream"):
            raise typer.BadParameter("must be 'batch' or 'stream'", param_hint="--dialect")
        from pinpipe.config import load_settings

        settings = load_settings({"source": {"url": db}})
        key = api_key or (settings.api.api_key.get_secret_value() if settings.api.api_key else None)
        opts = EmulateOptions(
            dialect="batch" if dialect == "batch" else "stream",
            api=api,
            db_url=settings.source.url,
            count=count,
            rate=rate,
            seed=seed,
            concurrency=concurrency,
            records_per_request=records_per_request,
            send_log=send_log,
            prefix=settings.prefix,
            api_key=key,
        )
        columns = (TextColumn("records"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
            task = bar.add_task("send", total=count * 3)
            summary = emulate(opts, lambda n: bar.advance(task, n))
        doc = summary.as_dict()
        if as_json:
            typer.echo(orjson.dumps(doc).decode())
        else:
            console.print(" ".join(f"{k}={v}" for k, v in doc.items()))
        failure = summary.failure()  # unreachable API: retryable (75); rejected records: 65
        if failure is not None:
            raise failure
