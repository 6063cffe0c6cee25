"""``pinpipe results`` and ``pinpipe report``: show the gold tables of a lake, as JSON, as tables or as a page.

Thin shells: :func:`pinpipe.batch.gold.read_gold_tables` reads ``<lake>/gold/<name>``; :mod:`pinpipe.report.html` builds the
HTML page. Both read only: they fail (exit 2) when the lake does not exist, and with the hint to run ``pinpipe
batch`` when it has no gold yet.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from pinpipe.errors import ConfigError

FORMATS = ("json", "table")

_LAKE_HELP = "Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: the lake.url setting)."


def _open_lake(lake_url: str | None) -> Any:
    from pinpipe.config import load_settings
    from pinpipe.lake.store import open_lake

    settings = load_settings({"lake": {"url": lake_url}})
    return open_lake(settings.lake.url, settings.lake, access="read")


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def results_json(gold: dict[str, list[dict[str, Any]]]) -> str:
    """``{table: [row objects]}`` as indented JSON (ints as ints, datetimes as ISO 8601 strings)."""
    return orjson.dumps(gold, default=_json_default, option=orjson.OPT_INDENT_2).decode()


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and "year" not in column:
        return f"{value:,}"
    return str(value)


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results_command(
        lake_url: Annotated[str | None, typer.Option("--lake", help=_LAKE_HELP)] = None,
        output_format: Annotated[
            str, typer.Option("--format", help="json ({table: [rows]}) or table (one table per gold table).")
        ] = "table",
    ) -> None:
        """Print the nine gold analysis tables of the lake."""
        from pinpipe.batch.gold import read_gold_tables
        from pinpipe.cli import console

        if output_format not in FORMATS:
            raise ConfigError(f"--format {output_format!r} is not a format", hint="use --format json or --format table")
        lake = _open_lake(lake_url)
        tables = read_gold_tables(lake)
        if output_format == "json":
            typer.echo(results_json({name: table.to_pylist() for name, table in tables.items()}))
            return
        from rich.table import Table

        for name, table in tables.items():
            view = Table(title=f"{name} ({table.num_rows} rows)", title_justify="left", title_style="bold")
            for field in table.schema:
                numeric = str(field.type).startswith("int")
                view.add_column(field.name, justify="right" if numeric else "left")
            for row in table.to_pylist():
                view.add_row(*(_cell(column, value) for column, value in row.items()))
            console.print(view)

    @app.command("report")
    def report_command(
        lake_url: Annotated[str | None, typer.Option("--lake", help=_LAKE_HELP)] = None,
        out: Annotated[Path, typer.Option("--out", help="Where to write the HTML page.")] = Path("pinpipe-report.html"),
    ) -> None:
        """Write a self-contained HTML report (charts of every gold table, data quality, runs) that works offline."""
        from pinpipe.report.html import write_report

        if out.exists() and out.is_dir():
            raise ConfigError(f"--out {out} is a directory", hint="give a file name, e.g. --out report.html")
        lake = _open_lake(lake_url)
        summary = write_report(lake, out)
        typer.echo(f"wrote {out} ({summary.describe()})")
