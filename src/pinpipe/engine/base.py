"""DataFrame engines: one PySpark-API program, two runtimes.

``duckdb`` (default) is SQLFrame over an in-process DuckDB connection: starts in a fraction of a second and
needs no JVM. ``spark`` is real PySpark 3.5 or 4.x (extra ``pinpipe[spark]``, Java 17), local or on a cluster
(:mod:`pinpipe.engine.spark`); there the batch job hands the data work to the executors
(:mod:`pinpipe.batch.spark_job`) and collects only what is small (counts, file lists, gold). Cleaning (:mod:`pinpipe.clean.rules`) and the analysis (:mod:`pinpipe.batch.gold`) take an
:class:`Engine` and use only ``engine.F`` / ``engine.Window`` and DataFrame methods both runtimes support.

Data goes in and out as Arrow (never ``createDataFrame(rows)``: SQLFrame inlines rows as SQL literals, which is
slow), see :meth:`Engine.frame` and :meth:`Engine.to_arrow`. Sessions run in UTC.

Programs run many times — cleaning per kind (once per batch run, once per stream micro-batch) and the gold
queries — go through :meth:`Engine.collect`: Arrow tables in, a function building DataFrames over them, Arrow
tables out. On Spark that is a DataFrame over the Arrow input + ``build`` + an Arrow collect. On DuckDB, building a SQLFrame
DataFrame and generating its SQL (sqlglot expression copies) costs 0.1–1 s whatever the data size while DuckDB
runs the SQL in milliseconds, so :class:`DuckDBEngine` builds each program once, over empty tables of the
inputs' schemas, keeps the SQL SQLFrame generated for it (exactly what ``toArrow`` would execute), and for every
later call runs that SQL over the new Arrow inputs (registered zero-copy under the same names). Same program,
same SQL, same results; only the sqlglot work is not repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

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
        (:func:`pinpipe.batch.gold.compute_gold_from_arrow`)."""
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
