"""``pinpipe source init|show|generate``: the commands work, and bad arguments exit 2 with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from pinpipe.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), " ".join(err.split())


def rows_in(db: Path, table: str) -> int:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        count = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return count


def test_init_generated_into_the_default_database(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["source", "init", "--from", "generated", "--rows", "1000"], capsys)
    assert code == 0 and "loaded generated rows (rows=1000, seed=0)" in out
    db = workdir / "pinpipe-data" / "source.db"
    assert rows_in(db, "pinterest_data") == rows_in(db, "user_data") == 1000
    code, out, _ = run(["source", "init", "--from", "generated", "--rows", "1000"], capsys)
    assert code == 0 and "nothing to do" in out
    code, _, err = run(["source", "init"], capsys)
    assert code == 2 and "already hold other rows" in err and "--replace" in err
    code, out, _ = run(["source", "init", "--replace"], capsys)
    assert code == 0 and "reloaded the bundled real sample" in out
    code, out, _ = run(["source", "show"], capsys)
    assert code == 0 and "pinterest_data" in out and "2,475" in out and "sample/v1" in out


def test_database_url_from_flag_and_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(["source", "init", "--db", f"sqlite:///{workdir}/flag.db"], capsys)
    assert code == 0 and rows_in(workdir / "flag.db", "geolocation_data") == 2504
    monkeypatch.setenv("PINPIPE__SOURCE__URL", f"sqlite:///{workdir}/env.db")
    code, _, _ = run(["source", "init"], capsys)
    assert code == 0 and rows_in(workdir / "env.db", "user_data") == 2727


def test_generate_writes_jsonl(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["source", "generate", "--rows", "20", "--seed", "1", "--out", "gen"], capsys)
    assert code == 0 and "wrote gen/user_data.jsonl (20 rows)" in out
    assert len((workdir / "gen" / "pinterest_data.jsonl").read_bytes().splitlines()) == 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["source", "init", "--from", "generated", "--rows", "0"], "number of rows must be a positive integer"),
        (["source", "init", "--from", "parquet"], "unknown data origin 'parquet'"),
        (["source", "init", "--rows", "5"], "--rows applies to --from generated only"),
        (["source", "init", "--db", "oracle://x/y"], "backend 'oracle' is not supported"),
        (["source", "show", "--db", "::nope::"], "cannot be parsed"),
        (["source", "generate", "--out", "x", "--faults", "2"], "faults must be a fraction between 0 and 1"),
        (["source", "generate", "--out", "x", "--seed", "-1"], "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_error(
    workdir: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "error:" in err and message in err and "hint:" in err


def test_unreachable_server_exits_75(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["source", "show", "--db", "postgresql+psycopg://u:topsecret@127.0.0.1:1/db"], capsys)
    assert code == 75 and "unavailable" in err and "topsecret" not in err
