"""What a silver table's log says changed between two versions: exactly the snapshots' difference, or nothing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pinpipe.lake import changes, delta
from pinpipe.lake.store import Lake
from pinpipe.stream.compaction import compact_table
from pinpipe.tables import SILVER_SCHEMAS


def _merge(lake: Lake, inds: list[int], title: str) -> int:
    rows = [{"ind": i, "title": title} for i in inds]
    delta.merge_silver(lake, "pin", pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS["pin"]))
    version = delta.table_version(lake, "silver", "pin")
    assert version is not None
    return version


def _files(lake: Lake) -> set[str]:
    dt = delta.open_table(lake, "silver", "pin")
    assert dt is not None
    return set(changes.all_files(dt))


def test_changes_are_the_difference_of_the_two_snapshots(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    first = _merge(lake, list(range(40)), "a")
    before = _files(lake)
    _merge(lake, list(range(0, 40, 5)), "b")  # copy-on-write: some files replaced
    _merge(lake, list(range(40, 60)), "c")  # new files
    last = _merge(lake, list(range(0, 40, 10)), "d")  # replaces files the second merge added
    after = _files(lake)
    got = changes.file_changes(lake, ("silver", "pin"), first, last)
    assert got is not None
    assert set(got.removed) == before - after and set(got.added) == after - before
    assert changes.file_changes(lake, ("silver", "pin"), last, last) == changes.FileChanges((), ())


def test_compaction_moves_rows_without_changing_them(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    for step in range(4):
        _merge(lake, list(range(step * 10, step * 10 + 10)), "a")
    start = delta.table_version(lake, "silver", "pin")
    assert start is not None
    compact_table(lake, "silver", "pin")
    end = delta.table_version(lake, "silver", "pin")
    assert end is not None and end > start
    assert changes.file_changes(lake, ("silver", "pin"), start, end) == changes.FileChanges((), ())


def test_missing_commit_or_metadata_change_is_unknown(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    first = _merge(lake, [1, 2, 3], "a")
    assert changes.file_changes(lake, ("silver", "pin"), -1, first) is None  # the creation: metadata
    second = _merge(lake, [4], "b")
    (tmp_path / "silver" / "pin" / "_delta_log" / f"{second:020d}.json").rename(tmp_path / "moved.json")
    assert changes.file_changes(lake, ("silver", "pin"), first, second) is None
    assert changes.file_changes(lake, ("silver", "pin"), second, first) is None  # backwards
