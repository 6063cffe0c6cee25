"""``pinpipe results`` and ``pinpipe report`` on a lake whose gold tables were written directly with deltalake."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pinpipe.batch.gold import GOLD_TABLES, compute_gold_from_arrow, write_gold
from pinpipe.cli import main
from pinpipe.engine import DuckDBEngine
from pinpipe.lake.store import Lake
from pinpipe.report.html import collect_report, render_report
from pinpipe.tables import KINDS, SILVER_SCHEMAS
from tests.fixtures.gold_cases import EXPECTED, EXTRA_USERS, POSTS, silver_from_posts
from tests.fixtures.report_lake import STREAM_SHARE, UPDATED, build_report_lake, page_tables


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
    assert "9 charts" in out and "0 runs" in out
    assert page.count('data-gold-table="') == len(GOLD_TABLES)
    assert "no runs table" in page
    quarantine = page_tables(page)["quarantine"]
    assert [(r["source"], r["records"]) for r in quarantine] == [(k, "0") for k in KINDS]  # 0, not null
    assert all("no quarantine table" in r["reason"] for r in quarantine)
    assert "The lake has no silver tables yet." in page and "profile" not in page_tables(page)
    assert "<script src" not in page and "<link" not in page  # self-contained


def test_report_on_a_lake_without_gold_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["report", "--lake", f"file://{tmp_path / 'empty'}", "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2
    assert "pinpipe batch" in err
    assert not (tmp_path / "r.html").exists()


@pytest.fixture(scope="module")
def both_paths_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("report-lake")
    with DuckDBEngine() as engine:
        build_report_lake(root / "lake", engine)
        build_report_lake(root / "one-run", engine, runs=1)
    yield root


def _report(lake: Path, out: Path) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pinpipe", "report", "--lake", f"file://{lake}", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, out.read_text()


def test_report_shows_which_path_wrote_silver(both_paths_lake: Path, tmp_path: Path) -> None:
    out, page = _report(both_paths_lake / "lake", tmp_path / "r.html")
    assert "2 runs" in out
    tables = page_tables(page)
    writers = {r["source"]: r for r in tables["writers"]}
    assert list(writers) == list(KINDS)
    for kind in KINDS:
        rows = DeltaTable(str(both_paths_lake / "lake" / "silver" / kind)).to_pyarrow_table().num_rows
        w = writers[kind]
        assert int(w["silver_rows"]) == rows
        assert int(w["inserted_by_stream"]) == int(rows * STREAM_SHARE)
        assert int(w["inserted_by_batch"]) == rows - int(rows * STREAM_SHARE)
        parts = ("inserted_by_stream", "inserted_by_batch", "inserted_by_other", "inserted_by_earlier")
        assert sum(int(w[c]) for c in parts) == rows  # the split reconciles with the table
        assert int(w["updated_by_batch"]) == UPDATED
        assert (w["stream_commits"], w["batch_commits"], w["compactions"]) == ("3", "1", "1")
        assert f"{kind}: silver holds {rows:,} rows — {int(rows * STREAM_SHARE):,} inserted by the stream path" in page
    days = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    per_day = next(c for c in days["charts"] if c["id"] == "silver_per_day")
    assert len(per_day["points"]) >= 3 and per_day["series"] == list(KINDS)


def test_report_says_one_run_not_one_runs(both_paths_lake: Path, tmp_path: Path) -> None:
    out, page = _report(both_paths_lake / "one-run", tmp_path / "r.html")
    assert re.search(r"\b1 run\)", out), out
    assert "1 runs" not in out and "1 runs" not in page
    assert "1 batch run" in page


def test_report_derives_year_ranges_and_labels_join_years(both_paths_lake: Path, tmp_path: Path) -> None:
    _, page = _report(both_paths_lake / "lake", tmp_path / "r.html")
    joined = page_tables(page)["users_joined_by_year"]
    years = sorted(int(r["post_year"]) for r in joined)
    span = f"{years[0]}–{years[-1]}"
    section = re.search(r'<section[^>]*id="users_joined_by_year".*?</section>', page, re.S)
    assert section is not None
    assert span in section.group(0) and "2015–2020" not in page
    assert '<th class="" data-col="post_year"' in section.group(0) and ">join year</th>" in section.group(0)
    charts = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))["charts"]  # type: ignore[union-attr]
    chart = next(c for c in charts if c["id"] == "users_joined_by_year")
    assert chart["category_title"] == "join year"


def test_report_profiles_every_silver_column(both_paths_lake: Path, tmp_path: Path) -> None:
    _, page = _report(both_paths_lake / "lake", tmp_path / "r.html")
    profile = page_tables(page)["profile"]
    assert [(r["source"], r["column"]) for r in profile] == [(k, c) for k in KINDS for c in SILVER_SCHEMAS[k].names]
    for kind in KINDS:
        silver = DeltaTable(str(both_paths_lake / "lake" / "silver" / kind)).to_pyarrow_table()
        for r in (r for r in profile if r["source"] == kind):
            assert int(r["nulls"]) == silver.column(r["column"]).null_count, (kind, r["column"])
    description = next(r for r in profile if (r["source"], r["column"]) == ("pin", "description"))
    assert int(description["placeholders"]) > 0  # from the runs' notes


def test_report_escapes_values_from_the_lake(gold_lake: str) -> None:
    data = collect_report(Lake(gold_lake))
    table = data.gold["top_category_by_country"]
    hostile = "<img src=x onerror=alert(1)></script>"
    column = table.schema.get_field_index("category")
    gold = {
        **data.gold,
        "top_category_by_country": table.set_column(column, "category", pa.array([hostile] * table.num_rows)),
    }
    page = render_report(dataclasses.replace(data, gold=gold))
    assert hostile not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # in the table, escaped by the template
    assert "\\u003cimg src=x" in page  # in the chart data, which cannot close its <script>
