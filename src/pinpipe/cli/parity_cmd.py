"""``pinpipe parity --lake A --lake B``: are the silver and quarantine tables of two lakes the same?

A thin shell over :func:`pinpipe.checks.parity.compare_lakes`. Prints one line per table (rows in A, rows in B,
differences) and, for a table that differs, its first ``--show`` differences with both versions. Exit code 0 when
every table is identical, 3 otherwise (the two paths disagree: a loss or a double, as accounting's code).
"""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from pinpipe.errors import AccountingError, ConfigError


def register(app: typer.Typer) -> None:
    @app.command("parity")
    def parity_command(
        lakes: Annotated[
            list[str], typer.Option("--lake", help="A lake URL; give exactly two (e.g. the stream's and the batch's).")
        ],
        show: Annotated[int, typer.Option("--show", help="Differences to print per table.", min=0)] = 10,
        as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the report as JSON.")] = False,
    ) -> None:
        """Prove that two lakes (stream path, batch path) hold identical silver tables and quarantined records."""
        from pinpipe.checks.parity import compare_lakes
        from pinpipe.config import load_settings
        from pinpipe.lake.store import open_lake

        if len(lakes) != 2:
            raise ConfigError(
                f"parity needs exactly two --lake options, got {len(lakes)}",
                hint="run: pinpipe parity --lake file://stream-lake --lake file://batch-lake",
            )
        settings = load_settings()
        a, b = (open_lake(url, settings.lake, access="read") for url in lakes)
        report = compare_lakes(a, b, limit=show)
        if as_json:
            doc = {
                "identical": report.identical,
                "tables": [
                    {
                        "table": t.table,
                        "rows_a": t.rows_a,
                        "rows_b": t.rows_b,
                        "differing": t.differing,
                        "examples": [{"key": d.key, "a": d.a, "b": d.b} for d in t.examples],
                    }
                    for t in report.tables
                ],
            }
            typer.echo(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2).decode())
        else:
            typer.echo(f"A = {lakes[0]}\nB = {lakes[1]}")
            for t in report.tables:
                status = "identical" if t.identical else f"{t.differing} differ"
                typer.echo(f"{t.table:<18} A {t.rows_a:>9,}  B {t.rows_b:>9,}  {status}")
                for d in t.examples:
                    typer.echo(f"    key {d.key!r}\n      A: {d.a!r}\n      B: {d.b!r}")
            typer.echo("parity: OK" if report.identical else "parity: DIFFERENT")
        if not report.identical:
            raise SystemExit(AccountingError.exit_code)
