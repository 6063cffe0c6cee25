"""``pinpipe results`` and ``pinpipe report`` on a lake whose gold tables were written directly with deltalake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.batch.gold import GOLD_TABLES, compute_gold_from_arrow, write_gold
from pinpipe.cli import main
from pinpipe.engine import DuckDBEngine
from pinpipe.lake.store import Lake
from tests.fixtures.gold_cases import EXPECTED, EXTRA_USERS, POSTS, silver_from_posts


@pytest.fixture(scope="module")
def gold_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("gold-lake")
    with DuckDBEngine() as engine:
        gold = compute_gold_from_arrow(engine, silver_from_posts(POSTS, extra_users=EXTRA_USERS))
    write_gold(Lake(f"file://{root}"), gold)
    yield f"file://{root}"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_results_json_prints_every_table_with_the_spec_names(
    gold_lake: str, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    code, out, _ = _run(["results", "--lake", gold_lake, "--format", "json"], capsys)
    assert code == 0
    printed = json.loads(out)
    assert list(printed) == list(GOLD_TABLES)
    assert printed == EXPECTED
    assert isinstance(printed["users_joined_by_year"][0]["number_users_joined"], int)


def test_results_table_prints_one_table_per_gold_table(
    gold_lake: str, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    code, out, _ = _run(["results", "--lake", gold_lake, "--format", "table"], capsys)
    assert code == 0
    for name in GOLD_TABLES:
        assert name in out
    assert "2015" in out and "2,015" not in out  # years are not formatted as numbers


def test_results_on_a_lake_without_gold_says_to_run_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["results", "--lake", f"file://{tmp_path / 'empty'}", "--format", "json"], capsys)
    assert code == 2  # a reading command on a lake without what it reads: usage error (SPEC §8)
    assert "no gold tables" in err
    assert "pinpipe batch" in err


def test_results_rejects_an_unknown_format(gold_lake: str, capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    code, _, err = _run(["results", "--lake", gold_lake, "--format", "csv"], capsys)
    assert code == 2
    assert "--format json" in err


def test_report_without_runs_or_quarantine_still_renders(
    gold_lake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    out_file = tmp_path / "r" / "report.html"
    code, out, _ = _run(["report", "--lake", gold_lake, "--out", str(out_file)], capsys)
    assert code == 0, out
    page = out_file.read_text()
    assert "9 charts" in out
    assert page.count('data-gold-table="') == len(GOLD_TABLES)
    assert "no runs table" in page
    assert "(no quarantine table)" in page
    assert "<script src" not in page and "<link" not in page  # self-contained


def test_report_on_a_lake_without_gold_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["report", "--lake", f"file://{tmp_path / 'empty'}", "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2
    assert "pinpipe batch" in err
    assert not (tmp_path / "r.html").exists()
