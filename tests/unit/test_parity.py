"""Parity between two lakes (silver by ind, quarantine as a multiset of reason + raw), the parity command's exit
codes, and silver compaction (schedule, fewer files, same rows and transactions, conflicts retried)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pinpipe.checks.parity import compare_lakes
from pinpipe.cli import main
from pinpipe.errors import CommitConflictError, ConfigError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.stream.compaction import Compactor, CompactSchedule, compact_table
from pinpipe.tables import QUARANTINE_SCHEMA, SILVER_BUCKETS, SILVER_SCHEMAS, silver_bucket


def _user(ind: int, name: str = "Ann Lee", age: int | None = 30) -> dict[str, Any]:
    return {"ind": ind, "user_name": name, "age": age, "date_joined": None}


def _bad(offset: int, raw: str, source: str) -> dict[str, Any]:
    return {"topic": "p.user", "partition": 0, "offset": offset, "source": source, "reason": "bad_type:age", "raw": raw}


def _fill(lake: Lake, users: list[dict[str, Any]], bad: list[dict[str, Any]]) -> None:
    delta.merge_silver(lake, "user", pa.Table.from_pylist(users, schema=SILVER_SCHEMAS["user"]))
    delta.write_quarantine(lake, "user", pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA))


def test_identical_lakes_have_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = Lake(f"file://{tmp_path / 'a'}"), Lake(f"file://{tmp_path / 'b'}")
    _fill(a, [_user(1), _user(2)], [_bad(5, '{"ind": 9, "age": "x"}', "log")])
    _fill(b, [_user(2), _user(1)], [_bad(7, '{"ind": 9, "age": "x"}', "topics/p.user/partition=0/x.json")])
    report = compare_lakes(a, b)
    assert report.identical
    assert {t.table: (t.rows_a, t.rows_b) for t in report.tables}["silver/user"] == (2, 2)
    main(["parity", "--lake", a.url, "--lake", b.url])  # returns normally: exit code 0
    assert "parity: OK" in capsys.readouterr().out


def test_differences_are_shown_with_both_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = Lake(f"file://{tmp_path / 'a'}"), Lake(f"file://{tmp_path / 'b'}")
    _fill(a, [_user(1), _user(2, age=40), _user(3)], [_bad(5, '{"ind": 9}', "log"), _bad(6, '{"ind": 9}', "log")])
    _fill(b, [_user(1), _user(2, age=41), _user(4)], [_bad(5, '{"ind": 9}', "log")])
    report = compare_lakes(a, b)
    tables = {t.table: t for t in report.tables}
    silver = tables["silver/user"]
    assert silver.differing == 3
    assert [d.key for d in silver.examples] == [2, 3, 4]
    assert silver.examples[0].a["age"] == 40 and silver.examples[0].b["age"] == 41
    assert silver.examples[1].b is None and silver.examples[2].a is None
    assert tables["quarantine/user"].differing == 1  # sent twice, quarantined once on one side
    assert tables["silver/pin"].identical  # absent on both sides
    with pytest.raises(SystemExit) as exit_info:
        main(["parity", "--lake", a.url, "--lake", b.url, "--show", "1"])
    assert exit_info.value.code == 3
    out = capsys.readouterr().out
    assert "parity: DIFFERENT" in out and "silver/user" in out and "41" in out


def test_parity_needs_two_lakes(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["parity", "--lake", f"file://{tmp_path}"])
    assert exit_info.value.code == ConfigError.exit_code


def test_compact_schedule_parsing() -> None:
    assert CompactSchedule.parse("200") == CompactSchedule(batches=200)
    assert CompactSchedule.parse("30s") == CompactSchedule(seconds=30.0)
    assert CompactSchedule.parse("off") is None and CompactSchedule.parse("0") is None
    with pytest.raises(ConfigError):
        CompactSchedule.parse("soon")


def test_compaction_keeps_rows_and_transactions_and_retries_conflicts(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    for i in range(12):
        rows = pa.Table.from_pylist([_user(i * 10 + j) for j in range(10)], schema=SILVER_SCHEMAS["user"])
        delta.merge_silver(lake, "user", rows, app_txns={"pinpipe-stream:p.user:0": (i + 1) * 10})
    uri = lake.table_uri("silver", "user")
    before = delta.read_table(lake, "silver", "user")
    buckets = {silver_bucket(i, SILVER_BUCKETS) for i in range(120)}  # silver is partitioned by bucket
    assert before is not None and len(DeltaTable(uri).file_uris()) > len(buckets)
    calls = {"n": 0}

    def flaky(lake: Lake, *parts: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise CommitConflictError("injected: a merge committed first")
        return compact_table(lake, *parts)

    compactor = Compactor(lake, CompactSchedule(batches=5), kinds=("user",), compact=flaky)  # one kind: every turn
    assert not compactor.due(4) and compactor.due(5)
    compactor.run(batches=5)
    assert calls["n"] == 2 and compactor.runs == 1 and not compactor.due(9)
    after = delta.read_table(lake, "silver", "user")
    assert after is not None and after.sort_by("ind").equals(before.sort_by("ind"))
    assert len(DeltaTable(uri).file_uris()) == len(buckets)  # one file per bucket
    assert delta.txn_version(lake, "user", "pinpipe-stream:p.user:0") == 120
