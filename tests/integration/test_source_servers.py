"""The source database on real MariaDB and PostgreSQL servers: what goes in comes back identical."""

from __future__ import annotations

from datetime import datetime

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

pytestmark = pytest.mark.integration


@pytest.fixture(params=["mariadb", "postgres"])
def server(request: pytest.FixtureRequest) -> DatabaseServer:
    db: DatabaseServer = request.getfixturevalue(request.param)
    return db


def test_sample_round_trips_exactly(server: DatabaseServer) -> None:
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


def test_generated_rows_round_trip_and_reserved_words_are_quoted(server: DatabaseServer) -> None:
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
            assert "DOUBLE" in types["latitude"] and (
                "DATETIME" in types["timestamp"] or "TIMESTAMP" in types["timestamp"]
            )
    finally:
        engine.dispose()


def test_stopped_server_is_source_unavailable(server: DatabaseServer) -> None:
    url = server.url("pinpipe").replace(f":{server.port}/", f":{free_port()}/")
    engine = create_source_engine(url)
    with pytest.raises(SourceUnavailableError) as caught:
        init_source(engine, SampleOrigin())
    assert caught.value.exit_code == 75 and "running" in (caught.value.hint or "")
