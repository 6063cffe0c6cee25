"""The source database: the three raw tables on SQLite (default), MySQL/MariaDB or PostgreSQL, via SQLAlchemy 2.

Callers: :mod:`pinpipe.source.load` (``pinpipe source init|show``) creates and fills the tables; the user
emulator reads one row at a time with :func:`read_row` and sizes its random offsets with :func:`count_rows`.

URLs (the ``source.url`` setting or ``--db``):

- ``sqlite:///path/to/source.db`` (the default ``sqlite:///pinpipe-data/source.db``; the parent directory is
  created), ``sqlite://`` for an in-memory database;
- ``mysql+pymysql://USER[:PASSWORD]@HOST:PORT/DB`` (``mysql://`` and ``mariadb://`` mean the same; extra
  ``mysql``; ``charset=utf8mb4`` is added unless given, because the data holds emoji and CJK text);
- ``postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/DB`` (``postgresql://`` means the same; extra ``postgres``).

A password not in the URL comes from the ``source.password`` setting. Tables keep the original column names,
order and types (SPEC §2): keys and ``downloaded`` INTEGER, text TEXT, latitude/longitude DOUBLE, datetimes
DATETIME/TIMESTAMP without time zone. The key (``index`` / ``ind``, quoted where it is a reserved word) is the
primary key, so ordered reads by offset stay cheap on every backend.

SQLAlchemy's connection errors are mapped here, once: :class:`~pinpipe.errors.SourceUnavailableError` when the
server cannot be reached, :class:`~pinpipe.errors.ConfigError` for a bad URL.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from pinpipe.errors import (
    ConfigError,
    InvalidInputError,
    MissingExtraError,
    PinpipeError,
    SourceUnavailableError,
    map_exceptions,
)
from pinpipe.tables import KIND_BY_TABLE, KINDS, RAW_TABLES, Kind
from pinpipe.values import RawType

_DRIVERS: dict[str, tuple[str, str, str]] = {
    # backend name -> (driver name in the URL, importable module, pinpipe extra)
    "sqlite": ("pysqlite", "sqlite3", ""),
    "mysql": ("pymysql", "pymysql", "mysql"),
    "mariadb": ("pymysql", "pymysql", "mysql"),
    "postgresql": ("psycopg", "psycopg", "postgres"),
}
SUPPORTED_URLS = "sqlite:///FILE, mysql+pymysql://USER@HOST:PORT/DB, postgresql+psycopg://USER@HOST:PORT/DB"

_SA_TYPES: dict[RawType, type[sa.types.TypeEngine[Any]]] = {
    "int": sa.Integer,
    "flag": sa.Integer,
    "text": sa.Text,
    "float": sa.Double,
    "datetime": sa.DateTime,
}

METADATA = sa.MetaData()
"""The three raw tables (and nothing else); :func:`source_table` looks one up."""

for _kind in KINDS:
    _raw = RAW_TABLES[_kind]
    sa.Table(
        _raw.name,
        METADATA,
        *(
            sa.Column(name, _SA_TYPES[raw_type](), primary_key=(name == _raw.key), autoincrement=False)
            for name, raw_type in _raw.columns
        ),
        mysql_charset="utf8mb4",
    )


def source_table(table: Kind | str) -> sa.Table:
    """The SQLAlchemy table for a kind (``pin``) or a table name (``pinterest_data``)."""
    kind = table if table in RAW_TABLES else KIND_BY_TABLE.get(table)
    if kind is None:
        valid = ", ".join([*KINDS, *KIND_BY_TABLE])
        raise InvalidInputError(f"unknown source table {table!r}", hint=f"use one of: {valid}")
    return METADATA.tables[RAW_TABLES[kind].name]


def parse_url(url: str, password: SecretStr | None = None) -> URL:
    """Validate a source URL and normalise its driver (``mysql://`` → ``mysql+pymysql://``); raise ConfigError."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"source database URL {url!r} cannot be parsed", hint=f"use one of: {SUPPORTED_URLS}"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(f"source database backend {backend!r} is not supported", hint=f"use one of: {SUPPORTED_URLS}")
    driver = _DRIVERS[backend][0]
    if parsed.drivername not in (backend, f"{backend}+{driver}"):
        raise ConfigError(
            f"source database driver {parsed.drivername!r} is not supported",
            hint=f"use {backend}+{driver}:// (one of: {SUPPORTED_URLS})",
        )
    parsed = parsed.set(drivername=f"{'mysql' if backend == 'mariadb' else backend}+{driver}")
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    if backend != "sqlite" and not parsed.database:
        raise ConfigError(
            f"source database URL {redact(parsed)} names no database",
            hint="append /DBNAME to the URL, e.g. mysql+pymysql://root@127.0.0.1:3306/pinterest_data",
        )
    if password is not None and parsed.password is None and backend != "sqlite":
        parsed = parsed.set(password=password.get_secret_value())
    return parsed


def redact(url: URL | str) -> str:
    """A URL safe to print: the password masked."""
    parsed = sa.make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def create_source_engine(url: str, password: SecretStr | None = None) -> Engine:
    """An engine for the source database at ``url``. Checks the URL and the driver; for a SQLite file, creates
    its parent directory. Does not connect (the first query does; see :func:`source_errors`)."""
    parsed = parse_url(url, password)
    backend = parsed.get_backend_name()
    _, module, extra = _DRIVERS[backend]
    if extra:
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingExtraError(module, extra) from exc
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        return sa.create_engine(parsed, pool_pre_ping=backend != "sqlite")
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"cannot use source database URL {redact(parsed)}: {exc}") from exc


@contextlib.contextmanager
def source_errors(engine: Engine) -> Iterator[None]:
    """Map SQLAlchemy's errors raised inside the block to the pinpipe tree (server down → retryable)."""
    where = redact(engine.url)
    with map_exceptions(
        "source",
        {
            SourceUnavailableError: f"source database {where} is unavailable",
            InvalidInputError: f"source database {where} refused a statement",
            ConfigError: f"cannot use source database {where}",
        },
        hint=_SOURCE_HINTS,
        detail=_dbapi_detail,
        backend=engine.dialect.name,
    ):
        yield


_SOURCE_HINTS: dict[type[PinpipeError], str] = {
    SourceUnavailableError: "check that the server is running and that host, port, user, password and database name "
    "are right (`pinpipe config` shows source.url)",
    InvalidInputError: "the tables may have another shape than pinpipe's; `pinpipe source init --replace` recreates "
    "them",
}


def _dbapi_detail(exc: BaseException) -> str:
    """The driver's own message (SQLAlchemy's wraps it with the statement and a link)."""
    orig = getattr(exc, "orig", None)
    return (str(orig).strip() if orig is not None else str(exc).strip()).splitlines()[0]


def create_tables(conn: Connection, *, replace: bool = False) -> list[str]:
    """Create the three tables where missing (drop them first with ``replace``); return the names created."""
    if replace:
        METADATA.drop_all(conn, checkfirst=True)
    existing = set(sa.inspect(conn).get_table_names())
    missing = [t for t in METADATA.sorted_tables if t.name not in existing]
    METADATA.create_all(conn, tables=missing)
    return [t.name for t in missing]


def existing_tables(conn: Connection) -> set[str]:
    """Which of the three source table names exist in the database."""
    return set(sa.inspect(conn).get_table_names()) & {t.name for t in METADATA.sorted_tables}


def insert_rows(conn: Connection, table: Kind | str, rows: list[tuple[Any, ...]]) -> int:
    """Insert ``rows`` (tuples in column order, datetimes as naive ``datetime``) with one executemany.

    Callers: the loader, chunk by chunk. The statement is compiled once per call for the connection's dialect
    and the DBAPI gets plain tuples (only DATETIME values go through the dialect's converter), which is several
    times faster than SQLAlchemy's per-row dict processing for wide tables. PostgreSQL (psycopg) gets the rows
    through ``COPY FROM STDIN`` instead. MySQL loads are bound by PyMySQL's pure-Python escaping (~10k rows/s)."""
    if not rows:
        return 0
    t = source_table(table)
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return _copy_rows(conn, t, rows)
    compiled = sa.insert(t).compile(dialect=dialect)
    converters = [
        (i, _datetime_converter(dialect, column))
        for i, column in enumerate(t.columns)
        if isinstance(column.type, sa.DateTime)
    ]
    converters = [(i, convert) for i, convert in converters if convert is not None]
    if converters:
        rows = _convert(rows, converters)
    params: list[Any]
    if compiled.positional:
        params = rows
    else:
        names = [column.key for column in t.columns]
        params = [dict(zip(names, row, strict=True)) for row in rows]
    conn.exec_driver_sql(str(compiled), params)
    return len(rows)


def _copy_rows(conn: Connection, t: sa.Table, rows: list[tuple[Any, ...]]) -> int:
    """PostgreSQL: ``COPY ... FROM STDIN`` (binary-safe, ~10x faster than psycopg's pipelined executemany)."""
    prepare = conn.dialect.identifier_preparer
    columns = ", ".join(prepare.format_column(column) for column in t.columns)
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {prepare.format_table(t)} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return len(rows)


def _datetime_converter(dialect: sa.Dialect, column: sa.Column[Any]) -> Any:
    """How a DATETIME value reaches the driver: SQLite stores text in SQLAlchemy's default format
    (``YYYY-MM-DD HH:MM:SS.ffffff``, which ``isoformat`` writes ten times faster than SQLAlchemy's processor);
    other dialects use their bind processor, if any."""
    if dialect.name == "sqlite":
        return operator.methodcaller("isoformat", " ", "microseconds")
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _convert(rows: list[tuple[Any, ...]], converters: list[tuple[int, Any]]) -> list[tuple[Any, ...]]:
    for i, convert in converters:
        rows = [row if row[i] is None else (*row[:i], convert(row[i]), *row[i + 1 :]) for row in rows]
    return rows


def read_row(conn: Connection, table: Kind | str, offset: int) -> dict[str, Any] | None:
    """The row at ``offset`` (0-based) of a source table, as a dict in column order, or None past the end.

    The original emulator ran ``SELECT * FROM t LIMIT offset, 1`` (MySQL syntax, no ORDER BY). Without an
    ORDER BY the row at an offset is whatever the server returns first, which differs between databases; this
    reads ``SELECT * FROM t ORDER BY <key> LIMIT 1 OFFSET offset`` instead, which is portable and, since the
    original tables hold keys 0..N-1, returns the same row as the original (offset = index). Datetime
    columns come back as naive :class:`datetime.datetime`, floats as ``float``, NULL as None."""
    if offset < 0:
        raise InvalidInputError(f"row offset must be >= 0, got {offset}")
    t = source_table(table)
    key = t.primary_key.columns[0]
    row = conn.execute(sa.select(t).order_by(key).limit(1).offset(offset)).first()
    return None if row is None else dict(row._mapping)


def count_rows(conn: Connection, table: Kind | str) -> int:
    """Number of rows in a source table."""
    t = source_table(table)
    return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())


def read_all(conn: Connection, table: Kind | str) -> list[dict[str, Any]]:
    """Every row of a source table ordered by key (dicts as :func:`read_row` returns them); for tests and
    small tables."""
    t = source_table(table)
    key = t.primary_key.columns[0]
    return [dict(row._mapping) for row in conn.execute(sa.select(t).order_by(key))]
