"""DataFrame engines: one PySpark-API program, two runtimes.

``duckdb`` (default) is SQLFrame over an in-process DuckDB connection: starts in a fraction of a second and
needs no JVM. ``spark`` is real PySpark in local mode (extra ``pinpipe[spark]``, Java 17), the same code that
runs on a cluster. Cleaning (:mod:`pinpipe.clean.rules`) and the analysis (:mod:`pinpipe.gold`) take an
:class:`Engine` and use only ``engine.F`` / ``engine.Window`` and DataFrame methods both runtimes support.

Data goes in and out as Arrow (never ``createDataFrame(rows)``: SQLFrame inlines rows as SQL literals, which is
slow), see :meth:`Engine.frame` and :meth:`Engine.to_arrow`. Sessions run in UTC.

Programs run many times — cleaning per kind (once per batch run, once per stream micro-batch) and the gold
queries — go through :meth:`Engine.collect`: Arrow tables in, a function building DataFrames over them, Arrow
tables out. On Spark that is ``createDataFrame`` + ``build`` + ``toArrow``. On DuckDB, building a SQLFrame
DataFrame and generating its SQL (sqlglot expression copies) costs 0.1–1 s whatever the data size while DuckDB
runs the SQL in milliseconds, so :class:`DuckDBEngine` builds each program once, over empty tables of the
inputs' schemas, keeps the SQL SQLFrame generated for it (exactly what ``toArrow`` would execute), and for every
later call runs that SQL over the new Arrow inputs (registered zero-copy under the same names). Same program,
same SQL, same results; only the sqlglot work is not repeated.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from pinpipe.errors import ConfigError, require

if TYPE_CHECKING:
    import duckdb

EngineName = Literal["duckdb", "spark"]
ENGINES: tuple[EngineName, ...] = ("duckdb", "spark")

Build = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""``build(frames) -> outputs``: a DataFrame program; ``frames`` maps each input name to a DataFrame over it,
``outputs`` maps each output name to a DataFrame. It must depend only on the frames (and constants of the code):
:class:`DuckDBEngine` runs the SQL of its first call again for later calls of the same program."""


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
        """Collect a DataFrame as an Arrow table (``toArrow`` exists on SQLFrame's and Spark's DataFrames)."""
        return df.toArrow()

    def collect(self, program: str, inputs: Mapping[str, pa.Table], build: Build) -> dict[str, pa.Table]:
        """Run ``build`` over ``inputs`` (name → Arrow table) and collect each output as Arrow (one action each;
        the rows of an output come in no particular order unless the program sorts them).

        ``program`` names the build function (``"clean:pin"``, ``"gold"``): the same name must always mean the
        same program. Called by cleaning (:func:`pinpipe.clean.rules.clean_table`) and gold
        (:func:`pinpipe.gold.compute_gold_from_arrow`)."""
        frames = {name: self.frame(table) for name, table in inputs.items()}
        return {name: self.to_arrow(df) for name, df in build(frames).items()}

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection for Arrow-in/Arrow-out helper queries (stage-1 parsing of JSON lines): the
        engine's own on DuckDB, a private one opened on first use otherwise. Same thread as the engine only."""
        import duckdb

        conn: duckdb.DuckDBPyConnection | None = getattr(self, "_helper_db", None)
        if conn is None:
            conn = duckdb.connect()
            self._helper_db = conn
        return conn

    def close(self) -> None:
        """Stop the session."""
        conn = getattr(self, "_helper_db", None)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Compiled:
    """A program's SQL on DuckDB: the name each input is registered under, the statements of each output."""

    tables: dict[str, str]
    statements: dict[str, list[str]]


class DuckDBEngine(Engine):
    """SQLFrame on a private DuckDB connection (Arrow is materialised as a DuckDB table, then ``session.table``);
    :meth:`collect` runs each program's SQL, generated once (see the module docstring)."""

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
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        return self.conn

    def collect(self, program: str, inputs: Mapping[str, pa.Table], build: Build) -> dict[str, pa.Table]:
        key = (program, *((name, tuple((f.name, f.type) for f in inputs[name].schema)) for name in sorted(inputs)))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(inputs, build)
        for name, table in inputs.items():
            self.conn.register(compiled.tables[name], table)
        # outputs have no defined row order (as on Spark): let DuckDB's operators run without keeping it
        self.conn.execute("SET preserve_insertion_order = false")
        try:
            out: dict[str, pa.Table] = {}
            for name, statements in compiled.statements.items():
                for sql in statements[:-1]:
                    self.conn.execute(sql)
                out[name] = self.conn.sql(statements[-1]).to_arrow_table()
            return out
        finally:
            self.conn.execute("RESET preserve_insertion_order")
            for name in inputs:
                self.conn.unregister(compiled.tables[name])

    def _compile(self, inputs: Mapping[str, pa.Table], build: Build) -> _Compiled:
        """Build the program over empty tables shaped like ``inputs`` and keep the SQL ``toArrow`` would run."""
        n = len(self._compiled)
        tables = {name: f"__pinpipe_p{n}_{name}" for name in inputs}
        frames = {name: self.frame(inputs[name].schema.empty_table(), tables[name]) for name in inputs}
        try:
            outputs = build(frames)
            statements = {
                name: [self.session._to_sql(e) for e in df._get_expressions(optimize=False)]
                for name, df in outputs.items()
            }
        finally:
            for table in tables.values():
                self.conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        return _Compiled(tables, statements)

    def frame(self, table: pa.Table, name: str | None = None) -> Any:
        name = name or f"t{next(self._names)}"
        self.conn.register("__pinpipe_arrow", table)
        try:
            self.conn.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM __pinpipe_arrow')
        finally:
            self.conn.unregister("__pinpipe_arrow")
        return self.session.table(name)

    def close(self) -> None:
        try:
            self.session.stop()
        finally:
            self.conn.close()
            self._compiled.clear()


class SparkEngine(Engine):
    """PySpark in local mode, bound to loopback, UTC, ANSI mode as Spark 4 ships it; ``driver_memory`` is the JVM
    heap, which in local mode holds the tasks too (Spark's default 1g runs out at 1M rows per table); it applies
    when this call starts the JVM."""

    name: EngineName = "spark"

    def __init__(self, master: str = "local[2]", driver_memory: str = "4g") -> None:
        require("pyspark", "spark")
        from pyspark.sql import SparkSession, Window
        from pyspark.sql import functions as F

        self.session = (
            SparkSession.builder.master(master)
            .appName("pinpipe")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.memory", driver_memory)
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

    def close(self) -> None:
        try:
            self.session.stop()
        finally:
            super().close()


def open_engine(name: str | Engine = "duckdb") -> Engine:
    """Start the engine called ``name`` (or return ``name`` itself if it is an Engine already)."""
    if isinstance(name, Engine):
        return name
    if name == "duckdb":
        return DuckDBEngine()
    if name == "spark":
        return SparkEngine()
    raise ConfigError(f"unknown engine {name!r}", hint="use one of: " + ", ".join(ENGINES))
