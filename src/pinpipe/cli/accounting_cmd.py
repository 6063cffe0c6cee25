"""``pinpipe accounting``: reconcile every record from the emulator's send log to silver (see :mod:`pinpipe.checks.accounting`).

A thin shell over :func:`pinpipe.checks.accounting.account`: prints a stage-by-stage table per topic and per kind (or
JSON with ``--json``), then the findings. Exit code 0 when everything balances, 3
(:class:`~pinpipe.errors.AccountingError`, naming the first stage at fault) when a stage lost or doubled records,
or is behind without ``--allow-lag``. It only reads: a lake or ``--log`` that does not exist, a log that holds no
topic, or a lake with nothing in it and no other evidence is :class:`~pinpipe.errors.NotFoundError` (exit 2) — an
absent location never reads as "balanced" nor as a stage that doubled records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer

if TYPE_CHECKING:  # the checks import the whole pipeline: only `pinpipe accounting` loads them
    from pinpipe.checks.accounting import AccountingReport


def render(report: AccountingReport, allow_lag: bool = False) -> None:
    """Print the report as Rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    from pinpipe.cli import console as terminal

    console = terminal if terminal.is_terminal else Console(width=150)

    def cell(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    topics = Table(title="per topic: emulator → API → log → lake → batch", title_justify="left")
    columns = (
        "topic",
        "sent",
        "acked",
        "rejected",
        "unresolved",
        "in log",
        "retired",
        "skipped",
        "landed",
        "expired",
        "not landed",
    )
    for name in (*columns, "batch done"):
        topics.add_column(name, justify="left" if name == "topic" else "right")
    for t in report.topics:
        values = (
            *(t.sent, t.acked, t.rejected, t.unresolved, t.in_log, t.retired, t.skipped),
            *(t.landed, t.expired, t.not_landed, t.batch_done),
        )
        topics.add_row(t.topic, *(cell(v) for v in values))
    console.print(topics)
    kinds = Table(title="per kind: batch runs → tables", title_justify="left")
    for name in ("kind", "read", "inserted", "updated", "collapsed", "quarantined", "silver rows", "valid inds"):
        kinds.add_column(name, justify="left" if name == "kind" else "right")
    kinds.add_column("quarantine rows", justify="right")
    for k in report.kinds:
        counts = (k.read, k.inserted, k.updated, k.collapsed, k.quarantined, k.silver_rows, k.valid_inds)
        kinds.add_row(k.kind, *(cell(v) for v in counts), cell(k.quarantine_rows))
    console.print(kinds)
    for f in report.findings:
        style = "yellow" if f.problem == "skipped" or (f.problem == "behind" and allow_lag) else "red"
        console.print(f"[{style}]{f.stage}[/]: {f.message}", highlight=False)
    balanced = not report.failures(allow_lag)
    console.print("accounting: [green]balanced[/]" if balanced else "accounting: [red]NOT balanced[/]")


def register(app: typer.Typer) -> None:
    @app.command("accounting")
    def accounting_command(
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        log_url: Annotated[
            str | None, typer.Option("--log", help="Event log URL; read to its end (omit to skip the log stage).")
        ] = None,
        send_logs: Annotated[
            list[str] | None,
            typer.Option("--send-log", help="The emulator's send log, a path (repeatable: one per emulator run)."),
        ] = None,
        sink_group: Annotated[str | None, typer.Option("--sink-group", help="The sink's group (sink.group).")] = None,
        allow_lag: Annotated[
            bool,
            typer.Option(
                "--allow-lag", metavar="", help="Do not fail on stages that are only behind (a live pipeline)."
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the report as JSON.")] = False,
    ) -> None:
        """Reconcile records stage by stage (sent → acked → log → landed → batch → silver); exit 3 on a loss."""
        from pinpipe.checks.accounting import account
        from pinpipe.config import load_settings
        from pinpipe.errors import NotFoundError
        from pinpipe.lake.store import LAKE_CONTENT, open_lake
        from pinpipe.locations import send_log_path
        from pinpipe.log import open_log

        settings = load_settings({"lake": {"url": lake_url}, "sink": {"group": sink_group}})
        paths = [send_log_path(location) for location in send_logs or []]
        for path in paths:
            if not path.is_file():
                raise NotFoundError(f"--send-log {path} is not a file", hint="pass the file given to `pinpipe emulate`")
        lake = open_lake(settings.lake.url, settings.lake, access="read")
        if not log_url and not paths and not lake.holds_objects(LAKE_CONTENT):
            raise NotFoundError(
                f"the lake {lake.url} holds neither landed objects nor tables: there is nothing to reconcile",
                hint="check --lake for a typo, or pass --log and --send-log to reconcile what was sent",
                lake=lake.url,
            )
        event_log = open_log(log_url, access="read") if log_url else None
        try:
            if event_log is not None and not event_log.topics():
                raise NotFoundError(
                    f"the event log {event_log.url} holds no topic",
                    hint="check --log: it must name the log `pinpipe api` wrote to",
                    log=event_log.url,
                )
            report = account(
                lake, settings.prefix, event_log=event_log, send_logs=paths, sink_group=settings.sink.group
            )
        finally:
            if event_log is not None:
                event_log.close()
        if as_json:
            typer.echo(orjson.dumps(report.as_dict(allow_lag), option=orjson.OPT_INDENT_2).decode())
        else:
            render(report, allow_lag)
        report.check(allow_lag)
