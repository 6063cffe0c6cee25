"""``pinpipe source init|show|generate``: the source database and generated data files.

A thin shell over :mod:`pinpipe.source.load` and :mod:`pinpipe.source.jsonl`; argument errors are
:class:`~pinpipe.errors.ConfigError` (exit code 2), an unreachable server is
:class:`~pinpipe.errors.SourceUnavailableError` (exit code 75).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pinpipe.cli.typer_app import PinpipeTyper

if TYPE_CHECKING:
    from pinpipe.tables import Kind

PROGRESS_MIN_ROWS = 50_000
"""Loads of at least this many rows (all tables together) show a progress bar."""

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the source database (default: setting source.url)."),
]


def _progress(total: int) -> Any:
    """A rich progress bar on stderr for big jobs, or a do-nothing context."""
    if total < PROGRESS_MIN_ROWS:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pinpipe.cli import err_console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def register(app: typer.Typer) -> None:
    source = PinpipeTyper(help="The source database (the three raw tables) and generated data.", no_args_is_help=True)
    app.add_typer(source, name="source")

    @source.command("init")
    def init_command(
        db: DbOption = None,
        origin: Annotated[
            str, typer.Option("--from", help="What to load: 'sample' (the bundled real rows) or 'generated'.")
        ] = "sample",
        rows: Annotated[
            int | None, typer.Option("--rows", help="Rows per table for --from generated (default 10000).")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed for --from generated.")] = 0,
        replace: Annotated[
            bool, typer.Option("--replace", metavar="", help="Drop and reload tables that hold other rows.")
        ] = False,
    ) -> None:
        """Create the three source tables and load the bundled sample (default) or generated rows."""
        from pinpipe.cli import console
        from pinpipe.source.database import create_source_engine
        from pinpipe.source.load import init_source, origin_from

        chosen = origin_from(origin, rows, seed)
        from pinpipe.config import load_settings

        settings = load_settings({"source": {"url": db}})
        engine = create_source_engine(settings.source.url, settings.source.password)
        total = sum(chosen.row_counts().values())
        try:
            with _progress(total) as bar:
                task = bar.add_task(f"loading {chosen.describe()}", total=total) if bar else None

                def advance(kind: Kind, n: int) -> None:
                    if bar is not None and task is not None:
                        bar.advance(task, n)

                report = init_source(engine, chosen, replace=replace, progress=advance)
        finally:
            engine.dispose()
        console.print(report.message(), highlight=False)

    @source.command("show")
    def show_command(db: DbOption = None) -> None:
        """Print the row count of each source table (and what pinpipe loaded into it)."""
        from rich.table import Table

        from pinpipe.cli import console
        from pinpipe.config import load_settings
        from pinpipe.emulate.preflight import check_source
        from pinpipe.source.database import create_source_engine, redact
        from pinpipe.source.load import show_source

        settings = load_settings({"source": {"url": db}})
        check_source(settings.source.url)  # it only reads: a SQLite file that does not exist is not created
        engine = create_source_engine(settings.source.url, settings.source.password)
        try:
            statuses = show_source(engine)
        finally:
            engine.dispose()
        table = Table(title=f"source database {redact(engine.url)}")
        table.add_column("table")
        table.add_column("rows", justify="right")
        table.add_column("loaded from")
        for status in statuses:
            rows_text = "missing" if status.rows is None else f"{status.rows:,}"
            table.add_row(status.table, rows_text, status.origin or "-")
        console.print(table)

    @source.command("generate")
    def generate_command(
        out: Annotated[Path, typer.Option("--out", help="Directory for <table>.jsonl files.")],
        rows: Annotated[int, typer.Option("--rows", help="Rows per table.")] = 10_000,
        seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed and rows give the same files.")] = 0,
        faults: Annotated[
            float, typer.Option("--faults", help="Share of records given an injected fault (0..1).")
        ] = 0.0,
    ) -> None:
        """Write generated rows of the three tables as JSONL files (one JSON record per line)."""
        from pinpipe.cli import console
        from pinpipe.source.jsonl import write_generated_jsonl
        from pinpipe.synth.faults import check_rate
        from pinpipe.synth.generate import check_size

        check_size(rows, seed)
        check_rate("faults", faults)
        with _progress(3 * rows) as bar:
            task = bar.add_task("generating", total=3 * rows) if bar else None

            def advance(n: int) -> None:
                if bar is not None and task is not None:
                    bar.advance(task, 3 * n)

            paths = write_generated_jsonl(out, rows, seed, faults=faults, progress=advance)
        for path in paths.values():
            console.print(f"wrote {path} ({rows:,} rows)", highlight=False)
