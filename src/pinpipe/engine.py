"""DataFrame engines: one PySpark-API program, two runtimes.

``duckdb`` (default) is SQLFrame over an in-process DuckDB connection: starts in a fraction of a second and
needs no JVM. ``spark`` is real PySpark in local mode (extra ``pinpipe[spark]``, Java 17), the same code that
runs on a cluster. Cleaning (:mod:`pinpipe.clean.rules`) and the analysis (:mod:`pinpipe.gold`) take an
:class:`Engine` and use only ``engine.F`` / ``engine.Window`` and DataFrame methods both runtimes support.

Data goes in and out as Arrow (never ``createDataFrame(rows)``: SQLFrame inlines rows as SQL literals, which is
slow), see :meth:`Engine.frame` and :meth:`Engine.to_arrow`. Sessions run in UTC.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import pyarrow as pa

from pinpipe.errors import ConfigError, require

EngineName = Literal["duckdb", "spark"]
ENGINES: tuple[EngineName, ...] = ("duckdb", "spark")


class Engine:
    """A DataFrame session plus the matching ``functions`` module (``F``) and ``Window`` class."""

    name: EngineName
    session: Any
    F: Any
    Window: Any

    def frame(self, table: pa.Table, name: str | None = None) -> Any:
        """A DataFrame over an Arrow table."""
        raise NotImplementedError

    def to_arrow(self, df: Any) -> pa.Table:
        """Collect a DataFrame as an Arrow table."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the session."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DuckDBEngine(Engine):
    """SQLFrame on a private DuckDB connection (Arrow is materialised as a DuckDB table, then ``session.table``)."""

    name: EngineName = "duckdb"

    def __init__(self, threads: int | None = None) -> None:
        import duckdb
        from sqlframe.duckdb import DuckDBSession, Window
        from sqlframe.duckdb import functions as F

        self.conn = duckdb.connect()
        self.conn.execute("SET TimeZone = 'UTC'")
        if threads:
            self.conn.execute(f"SET threads = {int(threads)}")
        self.session = DuckDBSession(conn=self.conn)
        self.F = F
        self.Window = Window
        self._names = itertools.count()

    def frame(self, table: pa.Table, name: str | None = None) -> Any:
        name = name or f"t{next(self._names)}"
        self.conn.register("__pinpipe_arrow", table)
        try:
            self.conn.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM __pinpipe_arrow')
        finally:
            self.conn.unregister("__pinpipe_arrow")
        return self.session.table(name)

    def to_arrow(self, df: Any) -> pa.Table:
        return df.toArrow()

    def close(self) -> None:
        try:
            self.session.stop()
        finally:
            self.conn.close()


class SparkEngine(Engine):
    """PySpark in local mode, bound to loopback, UTC, ANSI mode as Spark 4 ships it."""

    name: EngineName = "spark"

    def __init__(self, master: str = "local[2]") -> None:
        require("pyspark", "spark")
        from pyspark.sql import SparkSession, Window
        from pyspark.sql import functions as F

        self.session = (
            SparkSession.builder.master(master)
            .appName("pinpipe")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
        self.session.sparkContext.setLogLevel("ERROR")
        self.F = F
        self.Window = Window

    def frame(self, table: pa.Table, name: str | None = None) -> Any:
        return self.session.createDataFrame(table)

    def to_arrow(self, df: Any) -> pa.Table:
        return df.toArrow()

    def close(self) -> None:
        self.session.stop()


def open_engine(name: str | Engine = "duckdb") -> Engine:
    """Start the engine called ``name`` (or return ``name`` itself if it is an Engine already)."""
    if isinstance(name, Engine):
        return name
    if name == "duckdb":
        return DuckDBEngine()
    if name == "spark":
        return SparkEngine()
    raise ConfigError(f"unknown engine {name!r}", hint="use one of: " + ", ".join(ENGINES))
