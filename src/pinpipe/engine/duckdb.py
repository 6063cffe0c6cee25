"""The default engine: SQLFrame over a private in-process DuckDB connection (see :mod:`pinpipe.engine.base`).

Generating a program's SQL through SQLFrame/sqlglot costs 0.1–1 s per program, every process (the cleaning of
three kinds and gold: 2–4 s, most of a real-size batch run). With ``sql_cache`` (a directory; the CLI passes
``batch.sql_cache``) the SQL generated for a program is also kept on disk, keyed by a digest of the program's
name, its inputs' schemas and :func:`program_fingerprint` — the versions of sqlframe, sqlglot and duckdb and the
source of every module that builds programs — so any change to the code or the libraries compiles afresh, and
a later process runs the same SQL without building the program at all.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from pinpipe.engine.base import Build, Engine, EngineName
from pinpipe.telemetry.logs import get_logger

log = get_logger("engine")
_PROGRAM_SOURCES = ("clean", "batch/gold.py", "engine", "tables.py")
"""Where the programs run through :meth:`DuckDBEngine.collect` are built (relative to the package)."""


SMALL_INPUT_ROWS = 50_000
"""Up to this many input rows a query's result is fetched through the DB-API cursor (:func:`query_arrow`)."""


def query_arrow(conn: duckdb.DuckDBPyConnection, sql: str, input_rows: int) -> pa.Table:
    """The result of ``sql`` as an Arrow table. A relation (``conn.sql``) plans the statement once to bind it and
    again to run it; for a stream micro-batch (a few hundred rows) that planning is most of the cost (the pin
    cleaning statement: 15 ms through a relation, 11 ms through ``execute``), so small inputs go through
    ``execute``, whose Arrow output is one extra copy of the rows — what large inputs (a batch run's chunks) avoid
    through the relation."""
    if input_rows <= SMALL_INPUT_ROWS:
        with warnings.catch_warnings():  # the copy the warning is about is the smaller cost here
            warnings.simplefilter("ignore", UserWarning)
            return conn.execute(sql).to_arrow_table()
    return conn.sql(sql).to_arrow_table()


@functools.cache
def program_fingerprint() -> str:
    """A digest of everything the generated SQL depends on besides a program's name and inputs."""
    digest = hashlib.sha256()
    for dist in ("sqlframe", "sqlglot", "duckdb"):
        digest.update(f"{dist}={importlib.metadata.version(dist)};".encode())
    package = Path(__file__).resolve().parent.parent
    for where in _PROGRAM_SOURCES:
        path = package / where
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(source.relative_to(package)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Compiled:
    """A program's SQL on DuckDB: the name each input is registered under, the statements of each output."""

    tables: dict[str, str]
    statements: dict[str, list[str]]


class DuckDBEngine(Engine):
    """SQLFrame on a private DuckDB connection (Arrow is materialised as a DuckDB table, then ``session.table``);
    :meth:`collect` runs each program's SQL, generated once (see the module docstring)."""

    name: EngineName = "duckdb"

    def __init__(self, threads: int | None = None, sql_cache: Path | None = None) -> None:
        self.conn = duckdb.connect()
        self.conn.execute("SET TimeZone = 'UTC'")
        self._spill = tempfile.mkdtemp(prefix="pinpipe-duckdb-")  # where a query over its memory limit spills
        self.conn.execute(f"SET temp_directory = '{self._spill}'")
        if threads:
            self.conn.execute(f"SET threads = {int(threads)}")
        self._names = itertools.count()
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        self.sql_cache = sql_cache

    def __getattr__(self, name: str) -> Any:
        """``session``, ``F`` and ``Window`` on first use: a process whose programs all come from the SQL cache
        never imports SQLFrame (a fifth of a second)."""
        if name not in ("session", "F", "Window"):
            raise AttributeError(name)
        from sqlframe.duckdb import DuckDBSession, Window
        from sqlframe.duckdb import functions as F

        self.session = DuckDBSession(conn=self.conn)
        self.F = F
        self.Window = Window
        return getattr(self, name)

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        return self.conn

    def collect(self, program: str, inputs: Mapping[str, pa.Table], build: Build) -> dict[str, pa.Table]:
        key = (program, *((name, tuple((f.name, f.type) for f in inputs[name].schema)) for name in sorted(inputs)))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._load_or_compile(key, inputs, build)
        rows = sum(table.num_rows for table in inputs.values())
        for name, table in inputs.items():
            self.conn.register(compiled.tables[name], table)
        # outputs have no defined row order (as on Spark): let DuckDB's operators run without keeping it
        self.conn.execute("SET preserve_insertion_order = false")
        try:
            out: dict[str, pa.Table] = {}
            for name, statements in compiled.statements.items():
                for sql in statements[:-1]:
                    self.conn.execute(sql)
                out[name] = query_arrow(self.conn, statements[-1], rows)
            return out
        finally:
            self.conn.execute("RESET preserve_insertion_order")
            for name in inputs:
                self.conn.unregister(compiled.tables[name])

    def _load_or_compile(self, key: tuple[Any, ...], inputs: Mapping[str, pa.Table], build: Build) -> _Compiled:
        """The program's SQL from the disk cache, else compiled now (and stored there)."""
        digest = hashlib.sha256(orjson.dumps([program_fingerprint(), repr(key)])).hexdigest()[:24]
        path = self.sql_cache / f"{digest}.json" if self.sql_cache is not None else None
        if path is not None:
            try:
                doc = orjson.loads(path.read_bytes())
                return _Compiled(dict(doc["tables"]), {k: list(v) for k, v in doc["statements"].items()})
            except (OSError, ValueError, KeyError, TypeError):
                pass  # not cached yet (or unreadable): compile
        compiled = self._compile(digest, inputs, build)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(orjson.dumps({"tables": compiled.tables, "statements": compiled.statements}))
                os.replace(tmp, path)
            except OSError as exc:  # a read-only or full cache only costs the next process the compile
                log.debug("SQL cache not written", extra={"fields": {"path": str(path), "error": str(exc)}})
        return compiled

    def _compile(self, digest: str, inputs: Mapping[str, pa.Table], build: Build) -> _Compiled:
        """Build the program over empty tables shaped like ``inputs`` and keep the SQL ``toArrow`` would run.
        Its inputs are registered under names made from ``digest``, so programs never share a name."""
        tables = {name: f"__pinpipe_{digest}_{name}" for name in inputs}
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
            if "session" in self.__dict__:
                self.session.stop()
        finally:
            self.conn.close()
            self._compiled.clear()
            shutil.rmtree(self._spill, ignore_errors=True)
