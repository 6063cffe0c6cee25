"""``pinpipe drill``: SIGKILL one component of a running pipeline at random moments (or, with ``--component
corrupt``, flip a byte in the middle of its log and repair it), then prove nothing was lost.

A thin shell over :func:`pinpipe.ops.drill.run_drill`: prints progress lines, a table of the kills (when, which pid,
how long the restart took), both accountings and the parity result. Exit code 0 only if the accounting balances
and batch/stream parity holds; 3 (:class:`~pinpipe.errors.AccountingError`, naming the stage) otherwise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("drill")
    def drill_command(
        component: Annotated[
            str,
            typer.Option(
                "--component",
                help="What to kill: api, sink, stream or log (= the API process); corrupt: flip a byte in the log.",
            ),
        ] = "api",
        kills: Annotated[int, typer.Option("--kills", help="How many SIGKILLs.")] = 3,
        events: Annotated[int, typer.Option("--events", help="Selections sent through each dialect.")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Seed for the kill moments and the emulator.")] = 7,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="A new or empty directory (default: a temporary one, kept).")
        ] = None,
        send_seconds: Annotated[
            float, typer.Option("--send-seconds", help="How long the sending should last (kills fall inside).")
        ] = 6.0,
    ) -> None:
        """Run the pipeline as processes, SIGKILL a component K times while it works, then check the accounting."""
        from rich.table import Table

        from pinpipe.cli import console, err_console
        from pinpipe.cli.accounting_cmd import render
        from pinpipe.errors import AccountingError, ConfigError
        from pinpipe.ops.drill import COMPONENTS, DrillOptions, run_drill

        if component not in COMPONENTS:
            raise ConfigError(f"--component {component!r} is not one of {', '.join(COMPONENTS)}")
        from pinpipe.config import load_settings

        settings = load_settings()
        folder = data_dir or Path(tempfile.mkdtemp(prefix="pinpipe-drill-"))
        opts = DrillOptions(
            component=component,
            data_dir=folder,
            kills=kills,
            events=events,
            seed=seed,
            send_seconds=send_seconds,
            prefix=settings.prefix,
        )
        result = run_drill(opts, lambda line: err_console.print(line, highlight=False))
        table = Table(title=f"kills of {component}", title_justify="left")
        for name in ("#", "at (s)", "pid", "new pid", "restart (s)", "note"):
            table.add_column(name, justify="left" if name == "note" else "right")
        for k in result.kills:
            table.add_row(str(k.number), f"{k.at_s:.2f}", str(k.pid), str(k.new_pid), f"{k.restart_s:.2f}", k.note)
        if result.corruption is None:
            console.print(table)
        else:
            c = result.corruption
            console.print(
                f"corrupted record {c.offset} of {c.topic} partition {c.partition}: exit codes {c.exits}, "
                f"named in the error {c.named}; log verify {c.verify_before}, log repair {c.repair}, "
                f"log verify after {c.verify_after}: {'handled' if c.handled else 'NOT handled'}",
                highlight=False,
                soft_wrap=True,
            )
        for dialect, summary in result.sends.items():
            doc = summary.as_dict()
            console.print(
                f"emulate {dialect}: acked {doc['records_acked']} records in {doc['requests']} requests, "
                f"{doc['retries']} retries, {doc['requests_failed']} requests failed",
                highlight=False,
            )
        quiet = "not reached" if result.quiesced_s is None else f"{result.quiesced_s:.1f} s"
        console.print(f"quiescence after sending: {quiet}; data in {folder}", highlight=False)
        for title, report in (("batch lake", result.batch_accounting), ("stream lake", result.stream_accounting)):
            if report is not None:
                console.print(f"[bold]accounting, {title}[/]")
                render(report)
        if result.parity is not None:
            console.print(f"batch/stream parity: {'identical' if result.parity.identical else 'DIFFERENT'}")
        console.print(f"drill {'[green]passed[/]' if result.passed else '[red]FAILED[/]'} in {result.elapsed_s:.1f} s")
        for report in (result.batch_accounting, result.stream_accounting):
            if report is not None:
                report.check()
        if not result.passed:
            raise AccountingError(
                "batch and stream silver differ after the drill", hint="run: pinpipe parity --lake ... --lake ..."
            )
