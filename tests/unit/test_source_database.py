"""The source database on SQLite: loading, idempotent init, reads, URL checks and error mapping."""

from __future__ import annotations

import zipfile
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from pinpipe.errors import ConfigError, InvalidInputError, SourceUnavailableError
from pinpipe.source.database import (
    count_rows,
    create_source_engine,
    parse_url,
    read_all,
    read_row,
    source_table,
)
from pinpipe.source.load import GeneratedOrigin, SampleOrigin, init_source, origin_from, show_source
from pinpipe.source.sample import SAMPLE_ROWS, load_sample, load_sample_records
from pinpipe.tables import KINDS, RAW_TABLES


def test_sample_is_bundled_with_the_real_row_counts() -> None:
    for kind in KINDS:
        rows = load_sample(kind)
        assert len(rows) == SAMPLE_ROWS[kind]
        assert list(rows[0]) == list(RAW_TABLES[kind].column_names)
    user = load_sample("user")[0]
    assert user == {
        "ind": 0,
        "first_name": "Adam",
        "last_name": "Acosta",
        "age": 20,
        "date_joined": datetime(2015, 10, 21, 21, 26, 45),
    }
    assert load_sample_records("geo")[0]["timestamp"] == "2019-01-01 07:21:13"
    nulls = [r["index"] for r in load_sample("pin") if r["image_src"] is None]
    assert nulls == [360, 4467, 4521, 4540, 4727, 4760, 4770]


def test_sample_files_are_in_the_wheel(tmp_path: Path) -> None:
    hatchling = pytest.importorskip("hatchling.builders.wheel")
    root = Path(__file__).resolve().parents[2]
    builder = hatchling.WheelBuilder(str(root))
    wheel = next(iter(builder.build(directory=str(tmp_path), versions=["standard"])))
    names = zipfile.ZipFile(wheel).namelist()
    for kind in KINDS:
        assert f"pinpipe/data/{RAW_TABLES[kind].name}.jsonl.gz" in names


def test_sample_loads_into_sqlite_and_reads_back_identical(tmp_path: Path) -> None:
    engine = create_source_engine(f"sqlite:///{tmp_path}/nested/dir/source.db")
    report = init_source(engine, SampleOrigin())
    assert report.action == "loaded" and report.rows == SAMPLE_ROWS
    with engine.connect() as conn:
        for kind in KINDS:
            assert read_all(conn, kind) == load_sample(kind)
            assert count_rows(conn, RAW_TABLES[kind].name) == SAMPLE_ROWS[kind]
        first = read_row(conn, "pin", 0)
        assert first is not None and first["index"] == 4  # ordered by key: the sample's smallest index
        last = read_row(conn, "geo", SAMPLE_ROWS["geo"] - 1)
        assert last is not None and isinstance(last["timestamp"], datetime)
        assert read_row(conn, "user", SAMPLE_ROWS["user"]) is None
    with pytest.raises(InvalidInputError), engine.connect() as conn:
        read_row(conn, "pin", -1)


def test_generated_rows_read_back_with_the_original_offset_semantics(tmp_path: Path) -> None:
    engine = create_source_engine(f"sqlite:///{tmp_path}/g.db")
    init_source(engine, GeneratedOrigin(300, seed=2))
    with engine.connect() as conn:
        for offset in (0, 17, 299):
            for kind in KINDS:
                row = read_row(conn, kind, offset)
                assert row is not None and row[RAW_TABLES[kind].key] == offset  # offset = key, as in the original


def test_init_is_safe_to_rerun_and_refuses_to_mix_data(tmp_path: Path) -> None:
    engine = create_source_engine(f"sqlite:///{tmp_path}/s.db")
    assert init_source(engine, SampleOrigin()).action == "loaded"
    again = init_source(engine, SampleOrigin())
    assert again.action == "unchanged" and "nothing to do" in again.message()
    with pytest.raises(ConfigError) as caught:
        init_source(engine, GeneratedOrigin(100))
    assert "--replace" in (caught.value.hint or "") and "sample" in caught.value.message
    replaced = init_source(engine, GeneratedOrigin(100), replace=True)
    assert replaced.action == "replaced"
    statuses = show_source(engine)
    assert [(s.table, s.rows) for s in statuses] == [(RAW_TABLES[k].name, 100) for k in KINDS]
    assert all(s.origin and "rows=100" in s.origin for s in statuses)


def test_init_fills_existing_empty_tables_and_refuses_foreign_rows(tmp_path: Path) -> None:
    engine = create_source_engine(f"sqlite:///{tmp_path}/f.db")
    with engine.begin() as conn:
        source_table("user").create(conn)
    assert init_source(engine, GeneratedOrigin(10)).action == "loaded"
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM pinpipe_source_info"))
    with pytest.raises(ConfigError, match="loaded outside pinpipe"):
        init_source(engine, GeneratedOrigin(10))


def test_schema_keeps_the_original_names_order_and_types(tmp_path: Path) -> None:
    engine = create_source_engine(f"sqlite:///{tmp_path}/t.db")
    init_source(engine, GeneratedOrigin(5))
    inspector = sa.inspect(engine)
    for kind in KINDS:
        columns = inspector.get_columns(RAW_TABLES[kind].name)
        assert tuple(c["name"] for c in columns) == RAW_TABLES[kind].column_names
    geo = {c["name"]: str(c["type"]) for c in inspector.get_columns("geolocation_data")}
    assert geo["timestamp"] == "DATETIME" and geo["latitude"] == "DOUBLE" and geo["country"] == "TEXT"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "cannot be parsed"),
        ("oracle://scott@db/x", "not supported"),
        ("mysql+mysqldb://root@h/x", "driver"),
        ("postgresql+psycopg://u@h:5432", "names no database"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        create_source_engine(url)
    assert caught.value.exit_code == 2


def test_url_normalisation_and_password_from_settings() -> None:
    mysql = parse_url("mysql://root@127.0.0.1:3306/pins", SecretStr("s3cret"))
    assert mysql.drivername == "mysql+pymysql" and mysql.query["charset"] == "utf8mb4" and mysql.password == "s3cret"
    assert parse_url("mariadb://u:given@h/db", SecretStr("other")).password == "given"
    assert parse_url("postgresql://u@h/db").drivername == "postgresql+psycopg"


def test_unreachable_database_is_source_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()  # a directory where the database file should be: SQLite cannot open it
    engine = create_source_engine(f"sqlite:///{tmp_path}/dir.db")
    with pytest.raises(SourceUnavailableError) as caught:
        init_source(engine, SampleOrigin())
    assert caught.value.exit_code == 75 and caught.value.hint


def test_origin_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown data origin"):
        origin_from("csv")
    with pytest.raises(ConfigError, match="positive"):
        origin_from("generated", rows=0)
    with pytest.raises(ConfigError, match="--rows applies"):
        origin_from("sample", rows=10)
    assert origin_from("generated", rows=5, seed=3) == GeneratedOrigin(5, 3)


def test_sqlite_datetimes_are_stored_in_sqlalchemys_own_format(tmp_path: Path) -> None:
    engine = create_source_engine(f"sqlite:///{tmp_path}/d.db")
    init_source(engine, GeneratedOrigin(20))
    processor = sa.DateTime().dialect_impl(engine.dialect).bind_processor(engine.dialect)
    assert processor is not None
    with engine.connect() as conn:
        stored = conn.exec_driver_sql('SELECT "timestamp" FROM geolocation_data ORDER BY ind').scalars().all()
        assert stored == [processor(row["timestamp"]) for row in read_all(conn, "geo")]
