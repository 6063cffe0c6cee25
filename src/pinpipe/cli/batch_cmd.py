"""``pinpipe batch``: clean the newly landed records into silver, quarantine and gold (see :mod:`pinpipe.batch.job`).

Prints one accounting line per kind and the total, then — when a landing retention is set
(``landing.retention_ms``/``retention_bytes``, with ``landing.expire_with_batch``) — runs a landing expiry pass
(:mod:`pinpipe.cli.landing_cmd`), so the daily DAG expires with each run. Exits 3
(:class:`~pinpipe.errors.AccountingError`) if records were lost or doubled, 75 if the lake was unreachable, 2 for
bad flags and for a lake that does not exist or holds neither landed objects nor tables (a typo'd ``--lake`` must
not read as an empty run; nothing is created).

The command imports the job, the engine and the lake inside its body, so that ``pinpipe --help`` and every other
command start without them; on the DuckDB engine it lets pyarrow settle first that the process has no pandas
(:func:`pinpipe.lazy_import.pyarrow_without_pandas`: the run never hands pyarrow a pandas object, and pandas is
a large part of a fresh process's start). ``tests/unit/test_cli_imports.py`` bounds what a run loads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from pinpipe.errors import ConfigError, NotFoundError


def parse_instant(value: str | None, flag: str) -> datetime | None:
    """An ISO-8601 instant (``2024-01-01``, ``2024-01-01T00:00:00+00:00``; no zone = UTC) or None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{flag} {value!r} is not an ISO-8601 date or time", hint="use e.g. 2024-05-01T00:00:00+00:00"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_spark_conf(values: list[str] | None) -> dict[str, str] | None:
    """``--spark-conf KEY=VALUE`` flags as a dict (None when there are none)."""
    if not values:
        return None
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--spark-conf {value!r} is not KEY=VALUE", hint="e.g. --spark-conf spark.executor.memory=2g"
            )
        pairs[key.strip()] = val
    return pairs


def register(app: typer.Typer) -> None:
    @app.command("batch")
    def batch_command(
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        engine_name: Annotated[
            str | None, typer.Option("--engine", help="DataFrame engine: duckdb (default) or spark.")
        ] = None,
        interval_start: Annotated[
            str | None, typer.Option("--interval-start", help="Start of the run's data interval (ISO-8601).")
        ] = None,
        interval_end: Annotated[
            str | None, typer.Option("--interval-end", help="End of the run's data interval (ISO-8601).")
        ] = None,
        no_gold: Annotated[
            bool, typer.Option("--no-gold", metavar="", help="Update silver and quarantine only.")
        ] = False,
        spark_master: Annotated[
            str | None,
            typer.Option("--spark-master", help="Spark master URL for --engine spark (default: spark.master)."),
        ] = None,
        spark_conf: Annotated[
            list[str] | None,
            typer.Option("--spark-conf", help="A Spark setting KEY=VALUE for --engine spark (repeatable)."),
        ] = None,
    ) -> None:
        """Process every landed object not processed before: quarantine + silver (exactly once), then gold."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

        from pinpipe.batch.job import run_batch
        from pinpipe.cli import console, err_console
        from pinpipe.cli.landing_cmd import expire_after_batch
        from pinpipe.cli.vacuum_cmd import vacuum_after_batch
        from pinpipe.config import load_settings
        from pinpipe.engine import open_engine
        from pinpipe.lake.store import LAKE_CONTENT, open_lake
        from pinpipe.lazy_import import pyarrow_without_pandas

        start = parse_instant(interval_start, "--interval-start")
        end = parse_instant(interval_end, "--interval-end")
        if start and end and end < start:
            raise ConfigError("--interval-end is before --interval-start", hint="swap them")
        settings = load_settings(
            {
                "lake": {"url": lake_url},
                "batch": {"engine": engine_name},
                "spark": {"master": spark_master, "conf": parse_spark_conf(spark_conf)},
            }
        )
        if settings.batch.engine == "duckdb":  # nothing of this process hands pyarrow a pandas object
            pyarrow_without_pandas()
        lake = open_lake(settings.lake.url, settings.lake, access="read")
        if not lake.holds_objects(LAKE_CONTENT):
            raise NotFoundError(
                f"the lake {lake.url} holds neither landed objects nor tables",
                hint="check --lake (or lake.url) for a typo; `pinpipe sink` lands the event log there first",
                lake=lake.url,
            )
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with (
            open_engine(settings.batch.engine, settings.spark, settings.batch.sql_cache) as engine,
            Progress(*columns, console=err_console, transient=True) as bar,
        ):
            tasks: dict[str, TaskID] = {}

            def progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=total)
                bar.update(tasks[step], completed=done, total=total)

            result = run_batch(
                lake,
                engine,
                settings.prefix,
                interval_start=start,
                interval_end=end,
                progress=progress,
                gold=not no_gold,
                chunk_records=settings.batch.chunk_records,
            )
        for run in result.kinds.values():
            console.print(run.accounting_line(), highlight=False)
        total = result.total
        console.print(
            f"total read {total.read} = written {total.written} + collapsed duplicates {total.collapsed} + "
            f"quarantined {total.quarantined}; conflicts {total.conflicts}; objects {total.objects}; "
            f"gold tables rewritten {len(result.gold_written)}; run {result.run_id} "
            f"({(result.finished_at - result.started_at).total_seconds():.1f} s, engine {settings.batch.engine})",
            highlight=False,
        )
        expire_after_batch(lake, settings.prefix, settings.landing)
        vacuum_after_batch(lake, settings.vacuum)
