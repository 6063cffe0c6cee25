"""The source-database contract, run against every backend: SQLite (the default), and real MariaDB and
PostgreSQL servers: what goes in comes back identical, and a server that cannot be reached is retryable."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from pinpipe.errors import SourceUnavailableError
from pinpipe.source.database import count_rows, create_source_engine, read_all, read_row
from pinpipe.source.load import GeneratedOrigin, SampleOrigin, init_source
from pinpipe.source.sample import SAMPLE_ROWS, load_sample
from pinpipe.synth.generate import generate
from pinpipe.tables import KINDS, RAW_TABLES
from tests.fixtures.databases import DatabaseServer
from tests.fixtures.services import free_port


@dataclass
class Source:
    """A backend under test: ``new_database()`` gives an empty database; ``unreachable()`` a URL of one that
    cannot serve now (a server on a closed port; a SQLite file another process holds an exclusive lock on)."""

    new_database: Callable[[], str]
    unreachable: Callable[[], contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def _locked_sqlite(path: Path) -> Iterator[str]:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield f"sqlite:///{path}?timeout=0.2"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mariadb", marks=pytest.mark.integration),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    if request.param == "sqlite":
        names = iter(range(1_000))
        return Source(
            lambda: f"sqlite:///{tmp_path}/source-{next(names)}.db", lambda: _locked_sqlite(tmp_path / "l.db")
        )
    db: DatabaseServer = request.getfixturevalue(request.param)
    closed = db.url("pinpipe").replace(f":{db.port}/", f":{free_port()}/")
    return Source(db.new_database, lambda: contextlib.nullcontext(closed))


def test_sample_round_trips_exactly(server: Source) -> None:
    engine = create_source_engine(server.new_database())
    try:
        report = init_source(engine, SampleOrigin())
        assert report.action == "loaded"
        with engine.connect() as conn:
            for kind in KINDS:
                assert read_all(conn, kind) == load_sample(kind), kind
                assert count_rows(conn, kind) == SAMPLE_ROWS[kind]
            row = read_row(conn, "geolocation_data", 0)
            assert row is not None and isinstance(row["timestamp"], datetime) and row["timestamp"].tzinfo is None
            assert list(row) == list(RAW_TABLES["geo"].column_names)
            assert read_row(conn, "user", SAMPLE_ROWS["user"]) is None
        assert init_source(engine, SampleOrigin()).action == "unchanged"
    finally:
        engine.dispose()


def test_generated_rows_round_trip_and_reserved_words_are_quoted(server: Source) -> None:
    engine = create_source_engine(server.new_database())
    try:
        init_source(engine, GeneratedOrigin(1500, seed=4))
        expected: dict[str, list[dict[str, object]]] = {kind: [] for kind in KINDS}
        for block in generate(1500, 4):
            for kind in KINDS:
                names = RAW_TABLES[kind].column_names
                expected[kind] += [dict(zip(names, row, strict=True)) for row in block.rows[kind]]
        with engine.connect() as conn:
            for kind in KINDS:
                assert read_all(conn, kind) == expected[kind], kind
            assert read_row(conn, "pin", 1234) == expected["pin"][1234]
            types = {c["name"]: str(c["type"]).upper() for c in sa.inspect(conn).get_columns("geolocation_data")}
            assert ("DOUBLE" in types["latitude"] or "FLOAT" in types["latitude"]) and (
                "DATETIME" in types["timestamp"] or "TIMESTAMP" in types["timestamp"]
            )
    finally:
        engine.dispose()


def test_stopped_server_is_source_unavailable(server: Source) -> None:
    with server.unreachable() as url, pytest.raises(SourceUnavailableError) as caught:
        init_source(create_source_engine(url), SampleOrigin())
    assert caught.value.exit_code == 75 and "running" in (caught.value.hint or "")
