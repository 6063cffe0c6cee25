"""``pinpipe demo``: the whole pipeline end to end on embedded defaults (see :mod:`pinpipe.ops.demo`); ``make demo``.

Draws live progress on stderr and prints the results on stdout: the batch run's accounting, the quality gate,
the end-to-end reconciliation (as ``pinpipe accounting``), the nine gold tables (the data ``pinpipe results``
prints) and the report's path. Ctrl-C or SIGTERM stops every service it started; run it again to continue.
Exits 3 when the accounting does not balance.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pinpipe.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from pinpipe.ops.demo import DemoResult

STEPS = {
    "source": "source database (bundled sample)",
    "services": "api, sink, stream processes",
    "emulate": "emulate posts (both dialects)",
    "land": "sink: records landed",
    "stream": "stream worker: records in silver",
    "batch": "batch job",
}


class RichDemoUI:
    """The demo's progress bars and result tables (Rich)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}

    def progress(self, step: str, done: int, total: int | None) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.bar.add_task(STEPS.get(step, step), total=total)
        self.bar.update(self.tasks[step], completed=done, total=total)

    def note(self, text: str) -> None:
        self.bar.console.print(f"[yellow]note:[/] {text}", highlight=False)

    def results(self, result: DemoResult) -> None:
        self.bar.stop()
        print_results(result)

    def serving(self, urls: dict[str, str]) -> None:
        from pinpipe.cli import console

        console.print("\n[bold]services are running[/] (Ctrl-C stops them):")
        for name, url in urls.items():
            console.print(f"  {name:<36} {url}", highlight=False)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def print_results(result: DemoResult) -> None:
    """Everything the demo reports, on stdout."""
    from rich.table import Table

    from pinpipe.cli import console
    from pinpipe.cli.accounting_cmd import render

    console.rule("batch run")
    for run in result.batch.kinds.values():
        console.print(run.accounting_line(), highlight=False)
    for line in result.verdict.lines():
        console.print(line, highlight=False)
    console.rule("end-to-end accounting")
    render(result.accounting)
    console.rule("gold tables")
    for name, table in result.gold.items():
        console.print(f"[bold]{name}[/] ({table.num_rows} rows)", highlight=False)
        view = Table()
        for column in table.column_names:
            view.add_column(column)
        for row in table.to_pylist():
            view.add_row(*(_cell(v) for v in row.values()))
        console.print(view)
    console.rule()
    console.print(
        f"posts sent this run: {result.chunks_sent} chunks, {result.records_acked:,} records acknowledged "
        f"({result.chunks_skipped} chunks were sent by an earlier run)",
        highlight=False,
    )
    console.print(f"report: {result.report.path}", highlight=False)
    console.print(
        f"lake: {result.layout.lake_url}   (pinpipe results --lake {result.layout.lake_url})", highlight=False
    )
    console.print(f"demo finished in {result.seconds:.1f} s", highlight=False)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        data_dir: Annotated[
            Path, typer.Option("--data-dir", help="Where the source DB, event log, lake and logs live.")
        ] = Path("pinpipe-data"),
        events: Annotated[int, typer.Option("--events", min=0, help="Posts to emulate (3 records each).")] = 3000,
        seed: Annotated[int, typer.Option("--seed", help="Emulator seed (100 is the original's).")] = 100,
        keep_running: Annotated[
            bool,
            typer.Option("--keep-running", metavar="", help="Leave the services up afterwards and print their URLs."),
        ] = False,
        records_per_request: Annotated[
            int, typer.Option("--records-per-request", min=1, max=500, help="Records per HTTP request (1 = original).")
        ] = 50,
    ) -> None:
        """Run the whole pipeline on this machine: source DB → API → log → sink/stream → lake → batch → gold."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from pinpipe.cli import err_console
        from pinpipe.ops.demo import DemoOptions, run_demo

        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError(
                f"--data-dir {data_dir} is not a directory", hint="give a directory (the demo creates it if missing)"
            )
        from pinpipe.config import load_settings

        settings = load_settings()
        opts = DemoOptions(
            data_dir=data_dir,
            events=events,
            seed=seed,
            keep_running=keep_running,
            records_per_request=records_per_request,
            prefix=settings.prefix,
            sink_group=settings.sink.group,
        )
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, console=err_console) as bar:
                run_demo(opts, RichDemoUI(bar))
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: stopped every service; run `pinpipe demo` again to continue where it left off"
            )
            raise SystemExit(130) from None  # 128 + SIGINT, as a shell reports it
        finally:
            signal.signal(signal.SIGTERM, previous)
