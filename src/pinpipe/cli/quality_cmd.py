"""``pinpipe quality``: the data-quality gate over a recorded batch run (see :mod:`pinpipe.checks.quality`).

Prints one line per kind and the verdict (or JSON with ``--json``). Exits 0 when the run passes, 3
(:class:`~pinpipe.errors.AccountingError`) when it does not balance, 65 when its quarantine share is over the
threshold or it read no record (without ``--allow-empty``), 2 when the lake or the run does not exist (nothing is
created), 75 when the lake is unreachable. The Airflow DAG runs it after ``batch``.
"""

from __future__ import annotations

from typing import Annotated

import orjson
import typer


def register(app: typer.Typer) -> None:
    @app.command("quality")
    def quality_command(
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        max_share: Annotated[
            float,
            typer.Option("--max-quarantine-share", min=0.0, max=1.0, help="Fail above this quarantined share."),
        ] = 0.05,
        run_id: Annotated[str | None, typer.Option("--run-id", help="Judge this run (default: the latest).")] = None,
        interval_start: Annotated[
            str | None, typer.Option("--interval-start", help="Judge the latest run of this data interval.")
        ] = None,
        interval_end: Annotated[str | None, typer.Option("--interval-end", help="End of that interval.")] = None,
        allow_empty: Annotated[
            bool,
            typer.Option("--allow-empty", metavar="", help="Pass a run that read no record (by default it fails)."),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the verdict as JSON.")] = False,
    ) -> None:
        """Fail if a batch run's accounting does not balance or it quarantined too large a share."""
        from pinpipe.checks.quality import check_run, enforce
        from pinpipe.cli import console
        from pinpipe.cli.batch_cmd import parse_instant
        from pinpipe.lake.store import open_lake

        start = parse_instant(interval_start, "--interval-start")
        end = parse_instant(interval_end, "--interval-end")
        from pinpipe.config import load_settings

        settings = load_settings({"lake": {"url": lake_url}})
        lake = open_lake(settings.lake.url, settings.lake, access="read")
        verdict = check_run(
            lake, max_share, run_id=run_id, interval_start=start, interval_end=end, allow_empty=allow_empty
        )
        if as_json:
            typer.echo(orjson.dumps(verdict.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            for line in verdict.lines():
                console.print(line, highlight=False)
        enforce(verdict)
