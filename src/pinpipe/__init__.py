"""pinpipe: the Pinterest data pipeline, on a laptop in one command and on Kafka, Kinesis, S3, Spark, Airflow.

The Python API, for notebooks and schedulers — thin wrappers over the functions the CLI runs::

    import pinpipe

    lake = pinpipe.open_lake("s3://my-bucket/lake")           # or a path: "pinpipe-data/lake"
    result = pinpipe.run_batch(lake, engine="duckdb")         # landed objects → silver → gold, incrementally
    gold = pinpipe.read_gold(lake)                            # {table: pyarrow.Table}
    gold["top_category_by_country"].to_pylist()

Importing ``pinpipe`` stays light: the stages (and pyarrow, deltalake, DuckDB) load on first use of a name
(module ``__getattr__``). Settings (S3 endpoint and keys, the topic prefix) come from the environment and
``pinpipe.toml`` exactly as for the CLI (:func:`load_settings`).
"""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pinpipe.errors import FatalError, NotFoundError, PinpipeError, RetryableError

if TYPE_CHECKING:
    import pyarrow as pa

    from pinpipe.batch.job import BatchResult
    from pinpipe.checks.status import Look
    from pinpipe.config import Settings, load_settings
    from pinpipe.engine.base import Engine
    from pinpipe.lake.store import Lake
    from pinpipe.tables import KINDS, Kind

__all__ = [
    "KINDS",
    "FatalError",
    "Kind",
    "Lake",
    "NotFoundError",
    "PinpipeError",
    "RetryableError",
    "Settings",
    "load_settings",
    "open_lake",
    "read_gold",
    "read_silver",
    "run_batch",
    "status",
]

__version__ = "0.1.0"

_LAZY = {
    "KINDS": "pinpipe.tables",
    "Kind": "pinpipe.tables",
    "Lake": "pinpipe.lake.store",
    "Settings": "pinpipe.config",
    "load_settings": "pinpipe.config",
}
"""Names exported from heavier modules, imported on first access."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pinpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def open_lake(url: str | None = None, *, create: bool = False) -> Lake:
    """The lake at ``url`` (``file://DIR``, ``s3://BUCKET/PREFIX`` or a plain path; default: the ``lake.url``
    setting). S3 endpoint, region and keys come from the settings (``PINPIPE__LAKE__…``, ``pinpipe.toml``).

    A lake that does not exist raises :class:`NotFoundError` (a typo must not read as an empty lake) unless
    ``create`` is true."""
    from pinpipe.checks.status import as_url, open_existing_lake
    from pinpipe.config import load_settings
    from pinpipe.lake.store import Lake

    settings = load_settings({"lake": {"url": url}})
    if create:
        return Lake(as_url(settings.lake.url), settings.lake)
    return open_existing_lake(settings.lake.url, settings.lake)


def _lake(lake: Lake | str) -> Lake:
    return open_lake(lake) if isinstance(lake, str) else lake


def run_batch(
    lake: Lake | str,
    engine: str | Engine = "duckdb",
    *,
    prefix: str | None = None,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    gold: bool = True,
) -> BatchResult:
    """One batch run, as ``pinpipe batch``: every landed object not processed before → quarantine + silver
    (exactly once), then gold; the run is recorded in ``<lake>/_meta/runs``. ``engine`` is ``"duckdb"``,
    ``"spark"`` or an open :class:`~pinpipe.engine.base.Engine` (left open for the caller). Returns the run's
    accounting (:class:`~pinpipe.batch.job.BatchResult`: ``.kinds[kind].read``, ``.total``, ``.run_id``);
    raises :class:`~pinpipe.errors.AccountingError` if records were lost or doubled."""
    from pinpipe.batch.job import run_batch as run
    from pinpipe.config import load_settings
    from pinpipe.engine import Engine, open_engine

    the_lake = _lake(lake)
    settings = load_settings()
    chosen = prefix or settings.prefix
    if isinstance(engine, Engine):
        return run(the_lake, engine, chosen, interval_start=interval_start, interval_end=interval_end, gold=gold)
    with open_engine(engine, settings.spark, settings.batch.sql_cache) as opened:
        return run(the_lake, opened, chosen, interval_start=interval_start, interval_end=interval_end, gold=gold)


def read_gold(lake: Lake | str) -> dict[str, pa.Table]:
    """The nine gold tables as ``{name: pyarrow.Table}``, in SPEC order, rows sorted by their group columns
    (``.to_pylist()`` gives the row objects ``pinpipe results --format json`` prints, ``.to_pandas()`` a
    DataFrame). Raises :class:`NotFoundError` naming the tables missing (run :func:`run_batch` first)."""
    from pinpipe.batch.gold import read_gold_tables

    return read_gold_tables(_lake(lake))


def read_silver(lake: Lake | str) -> dict[str, pa.Table]:
    """The three silver tables as ``{"pin"|"geo"|"user": pyarrow.Table}`` (SPEC columns first). Raises
    :class:`NotFoundError` naming the kinds that have no table yet."""
    from pinpipe.lake import delta
    from pinpipe.tables import KINDS

    the_lake = _lake(lake)
    found = {kind: delta.read_table(the_lake, "silver", kind) for kind in KINDS}
    missing = [kind for kind, table in found.items() if table is None]
    if missing:
        raise NotFoundError(
            f"the lake {the_lake.url} has no silver table for {', '.join(missing)}",
            hint="land records and run pinpipe.run_batch(lake) (or `pinpipe stream`) first",
            lake=the_lake.url,
            missing=missing,
        )
    return {kind: table for kind, table in found.items() if table is not None}


def status(log: str | None = None, lake: Lake | str | None = None, *, stream_lake: Lake | str | None = None) -> Look:
    """One look at the running pipeline, as ``pinpipe status --json`` prints it (``.as_dict()``): per topic and
    partition the log's end and the sink's and the stream's positions and lags, silver freshness, the last batch
    run. ``log`` and ``lake`` default to the settings; nothing is created."""
    from pinpipe.checks.status import open_existing_log, take_look
    from pinpipe.config import load_settings

    settings = load_settings({"log": {"url": log}})
    the_lake = _lake(lake) if lake is not None else open_lake()
    the_stream_lake = _lake(stream_lake) if stream_lake is not None else None
    with open_existing_log(settings.log.url) as event_log:
        return take_look(
            event_log, the_lake, prefix=settings.prefix, sink_group=settings.sink.group, stream_lake=the_stream_lake
        )
