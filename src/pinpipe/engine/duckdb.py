"""The default engine: SQLFrame over a private in-process DuckDB connection (see :mod:`pinpipe.engine.base`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from pinpipe.engine.base import Build, Engine, EngineName


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
