"""DataFrame engines: one PySpark-API program, two runtimes (:mod:`~pinpipe.engine.base` explains the contract).

- :mod:`pinpipe.engine.duckdb` — SQLFrame over DuckDB, the default;
- :mod:`pinpipe.engine.spark` — PySpark 3.5 or 4.x (extra ``pinpipe[spark]``), local or on a cluster;
  :mod:`pinpipe.engine.spark_io` holds what its executors run (reading the lake, writing Parquet files).
"""

from __future__ import annotations

from pathlib import Path

from pinpipe.config import SparkSettings
from pinpipe.engine.base import ENGINES, Build, Engine, EngineName
from pinpipe.engine.duckdb import DuckDBEngine
from pinpipe.engine.spark import SparkEngine
from pinpipe.errors import ConfigError

__all__ = ["ENGINES", "Build", "DuckDBEngine", "Engine", "EngineName", "SparkEngine", "open_engine"]


def open_engine(
    name: str | Engine = "duckdb", spark: SparkSettings | None = None, sql_cache: Path | None = None
) -> Engine:
    """Start the engine called ``name`` (or return ``name`` itself if it is an Engine already); ``spark``
    configures the Spark engine (master, conf, …; defaults: :class:`~pinpipe.config.SparkSettings`); DuckDB keeps
    the SQL it generates in ``sql_cache`` when given (``batch.sql_cache``)."""
    if isinstance(name, Engine):
        return name
    if name == "duckdb":
        return DuckDBEngine(sql_cache=sql_cache)
    if name == "spark":
        return SparkEngine(spark)
    raise ConfigError(f"unknown engine {name!r}", hint="use one of: " + ", ".join(ENGINES))
