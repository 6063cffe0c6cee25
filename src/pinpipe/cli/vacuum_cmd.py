"""``pinpipe vacuum``: delete (or, ``--dry-run``, show) the data files of the lake's Delta tables that left their
table's current version more than the retention ago (a thin shell over :mod:`pinpipe.ops.vacuum`).

The retention comes from ``vacuum.retention_hours`` (``PINPIPE__VACUUM__RETENTION_HOURS``, ``[vacuum]`` in
``pinpipe.toml``; 168 h by default), or ``--retention-hours N`` for this run. ``pinpipe batch`` calls
:func:`vacuum_after_batch` after its run: a pass when the last one is ``vacuum.every_hours`` (24) old, unless
``vacuum.with_batch`` is off. It may run while the sink, the stream
and the batch run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer

if TYPE_CHECKING:
    from pinpipe.config import VacuumSettings
    from pinpipe.lake.store import Lake
    from pinpipe.ops.vacuum import Vacuumed


def print_result(result: list[Vacuumed], *, dry_run: bool, retention_hours: int) -> None:
    from pinpipe.cli import console

    verb = "would delete" if dry_run else "deleted"
    for table in result:
        if table.files:
            console.print(f"{table.table}: {verb} {len(table.files)} data files", highlight=False)
    total = sum(len(t.files) for t in result)
    console.print(
        f"vacuum: {verb} {total} data files of {len(result)} tables (retention {retention_hours} h)", highlight=False
    )


def vacuum_after_batch(lake: Lake, vacuum: VacuumSettings) -> None:
    """The vacuum pass ``pinpipe batch`` runs after its run: when ``vacuum.with_batch`` is on and
    :func:`~pinpipe.ops.vacuum.due` (the last pass ran ``vacuum.every_hours`` ago: a daily batch vacuums daily, an
    hourly one not every hour; a lake younger than the retention has nothing to vacuum yet)."""
    if not vacuum.with_batch:
        return
    from pinpipe.ops.vacuum import due, vacuum_lake

    if not due(lake, vacuum.every_hours, vacuum.retention_hours):
        return

    result = vacuum_lake(lake, vacuum.retention_hours)
    print_result(result, dry_run=False, retention_hours=vacuum.retention_hours)


def register(app: typer.Typer) -> None:
    @app.command("vacuum")
    def vacuum_command(
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        retention_hours: Annotated[
            int | None,
            typer.Option(
                "--retention-hours",
                help="Delete files that left their table's version over this many hours ago "
                "(default: vacuum.retention_hours, 168).",
            ),
        ] = None,
        full: Annotated[
            bool,
            typer.Option(
                "--full", help="Also list each table's files and delete those no version references (older ones)."
            ),
        ] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the files per table as JSON.")] = False,
    ) -> None:
        """Delete the data files the lake's Delta tables no longer need (rewritten, compacted, overwritten)."""
        from pinpipe.config import load_settings
        from pinpipe.lake.store import open_lake
        from pinpipe.ops.vacuum import vacuum_lake

        settings = load_settings({"lake": {"url": lake_url}, "vacuum": {"retention_hours": retention_hours}})
        lake = open_lake(settings.lake.url, settings.lake, access="read")
        hours = settings.vacuum.retention_hours
        result = vacuum_lake(lake, hours, dry_run=dry_run, full=full)
        if as_json:
            doc = {
                "dry_run": dry_run,
                "retention_hours": hours,
                "tables": {t.table: t.files for t in result},
            }
            typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        else:
            print_result(result, dry_run=dry_run, retention_hours=hours)
