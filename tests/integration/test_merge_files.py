"""A micro-batch merge reads and rewrites a bounded number of silver's data files, however big silver grows.

Structural, not timed: silver is filled with 10k and then (a fresh lake) 100k pin rows, each through the product's
own merge, with a small target file size so the table has many files. A micro-batch of 300 new ``ind`` plus 6
changed old ones spread over the key range is merged with every data file the batch's keys cannot touch moved
out of the table's directory: the merge succeeds, so delta-rs read none of them. The files it may read and the
files it rewrites stay under a bound that does not depend on the table's size.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.synth.generate import generate_records
from pinpipe.synth.oracle import clean_record
from pinpipe.tables import SILVER_BUCKETS, SILVER_SCHEMAS

NEW, OLD = 300, 6


def _pins(rows: int, start: int, seed: int) -> list[dict[str, object]]:
    out = []
    for record in generate_records(rows, seed, start=start)["pin"]:
        row = clean_record("pin", record).row
        assert row is not None
        out.append(row)
    return out


def _micro_batch_files(root: Path, rows: int) -> tuple[int, int, int]:
    """(files in silver before the batch, files the batch may read, files it rewrote)."""
    lake = Lake(f"file://{root}")
    delta.merge_silver(lake, "pin", pa.Table.from_pylist(_pins(rows, 0, 0), schema=SILVER_SCHEMAS["pin"]))
    old = sorted(random.Random(rows).sample(range(rows), OLD))
    batch = _pins(NEW + OLD, rows, 1)
    batch[NEW:] = [{**row, "ind": ind} for row, ind in zip(batch[NEW:], old, strict=True)]
    inds = [int(str(row["ind"])) for row in batch]
    table_dir = root / "silver" / "pin"
    every = {p for p in table_dir.rglob("*.parquet")}
    may_read = {Path(uri) for uri in delta.silver_files(lake, "pin", inds) or []}
    assert may_read <= every
    hidden = root / "hidden"
    moved = []
    for path in every - may_read:  # what the merge must not read: gone from the table's directory
        target = hidden / path.relative_to(table_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        moved.append((target, path))
    try:
        merged = delta.merge_silver(lake, "pin", pa.Table.from_pylist(batch, schema=SILVER_SCHEMAS["pin"]))
    finally:
        for target, path in moved:
            shutil.move(target, path)
    assert (merged.inserted, merged.updated) == (NEW, OLD)
    silver = delta.read_table(lake, "silver", "pin")
    assert silver is not None and silver.num_rows == rows + NEW == len(pc.unique(silver.column("ind")))
    return len(every), len(may_read), merged.files_rewritten


def test_micro_batch_merge_touches_a_bounded_number_of_files_as_silver_grows_tenfold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(delta.SILVER_FILE_BYTES, "pin", 64 * 1024)  # many files from few rows
    small = _micro_batch_files(tmp_path / "small", 10_000)
    large = _micro_batch_files(tmp_path / "large", 100_000)
    assert large[0] >= 5 * small[0], (small, large)  # the table really grew: many more files
    bound = OLD + SILVER_BUCKETS  # a file per changed old ind, at most one per bucket for the new keys
    for files, may_read, rewritten in (small, large):
        assert may_read <= bound and rewritten <= OLD, (files, may_read, rewritten)
    assert large[1] <= small[1] + OLD, (small, large)


def test_a_silver_table_from_before_the_bucket_column_keeps_working(tmp_path: Path) -> None:
    """A table created without ``bucket`` (SPEC columns only) is merged into as it is: no migration needed."""
    from deltalake import DeltaTable, write_deltalake

    lake = Lake(f"file://{tmp_path / 'lake'}")
    rows = _pins(1_000, 0, 0)
    write_deltalake(lake.table_uri("silver", "pin"), pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS["pin"]))
    batch = [*_pins(NEW, 1_000, 1), {**rows[10], "title": "changed"}, rows[20]]
    merged = delta.merge_silver(lake, "pin", pa.Table.from_pylist(batch, schema=SILVER_SCHEMAS["pin"]))
    assert (merged.inserted, merged.updated, merged.unchanged) == (NEW, 1, 1)
    assert (merged.rows_before, merged.rows_after) == (1_000, 1_000 + NEW)
    silver = delta.read_table(lake, "silver", "pin")
    assert silver is not None and silver.num_rows == 1_000 + NEW == len(pc.unique(silver.column("ind")))
    assert "bucket" not in {f.name for f in DeltaTable(lake.table_uri("silver", "pin")).schema().fields}


def test_the_bucket_is_the_log_partition_of_the_same_ind() -> None:
    """A worker owning log partition ``p`` of ``P`` (``P`` dividing 16) writes only buckets ``b % P == p``."""
    from pinpipe.log.base import partition_for
    from pinpipe.tables import silver_bucket

    for ind in [*range(0, 5_000, 7), 2**63 - 1, 123_456_789_012]:
        key = str(ind).encode()  # how the API keys a record (ingest: str(key_of(kind, value)).encode())
        assert silver_bucket(ind, SILVER_BUCKETS) == partition_for(key, SILVER_BUCKETS)
        for partitions in (2, 4, 8, 16):
            assert partition_for(key, partitions) == silver_bucket(ind, SILVER_BUCKETS) % partitions


def test_micro_batches_that_update_old_inds_keep_every_file_to_a_narrow_key_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve micro-batches of new ``ind`` plus changed old ones, then a compaction, leave silver as clustered as
    the fill: an ``ind`` can be in at most one file of its bucket (a file rewritten for an update keeps its own rows and range;
    the inserts go to files of their own), so each merge reads only the files of its updated keys. A merge that
    wrote the updated rows together with the inserts would leave files spanning old and new keys, which every
    later merge would have to read."""
    from pinpipe.lake.data_files import table_files
    from pinpipe.stream.compaction import compact_table
    from pinpipe.tables import silver_bucket

    monkeypatch.setitem(delta.SILVER_FILE_BYTES, "pin", 64 * 1024)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    rows = 20_000
    delta.merge_silver(lake, "pin", pa.Table.from_pylist(_pins(rows, 0, 0), schema=SILVER_SCHEMAS["pin"]))
    rng = random.Random(7)
    top = rows
    for step in range(12):
        batch = _pins(NEW + OLD, top, step + 1)
        old = rng.sample(range(rows), OLD)
        batch[NEW:] = [{**row, "ind": ind} for row, ind in zip(batch[NEW:], old, strict=True)]
        top += NEW
        merged = delta.merge_silver(lake, "pin", pa.Table.from_pylist(batch, schema=SILVER_SCHEMAS["pin"]))
        assert (merged.inserted, merged.updated) == (NEW, OLD), step
        assert merged.files_read == merged.files_rewritten <= OLD, (step, merged)
    files: list[Any] = []
    for phase in ("merged", "compacted"):
        if phase == "compacted":  # packs the micro-batches' small files, never across another file's range
            before = len(files)
            result = compact_table(lake, "silver", "pin")
            assert result is not None and result["numFilesRemoved"] > result["numFilesAdded"] > 0
        dt = delta.open_table(lake, "silver", "pin")
        assert dt is not None
        files = table_files(dt)
        if phase == "compacted":
            assert len(files) < before
        for ind in rng.sample(range(top), 200):
            holders = [f for f in files if f.bucket == silver_bucket(ind, SILVER_BUCKETS) and _may_hold(f, ind)]
            assert len(holders) == 1, (phase, ind, holders)
        silver = delta.read_table(lake, "silver", "pin")
        assert silver is not None and silver.num_rows == top == len(pc.unique(silver.column("ind")))


def _may_hold(f: Any, ind: int) -> bool:
    return f.low is None or f.high is None or bool(f.low <= ind <= f.high)


def test_a_kept_handles_log_head_holds_exactly_the_files_and_transactions_delta_rs_lists(tmp_path: Path) -> None:
    """After each merge through kept handles, the log head's view of the new version (its own commits written by
    pinpipe, another writer's read from the log) is exactly what delta-rs lists when it opens that version afresh:
    the same files with the same ``ind`` ranges, buckets and row counts (and its totals and bucket index agree), the
    same application transactions."""
    from pinpipe.lake import data_files
    from pinpipe.lake.open_tables import DeltaHandles

    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    rows = _pins(3_000, 0, 0)
    delta.merge_silver(lake, "pin", pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS["pin"]), handles=handles)
    rng = random.Random(3)
    for step in range(6):
        batch = [*_pins(50, 3_000 + 50 * step, step + 1), *({**r, "title": f"v{step}"} for r in rng.sample(rows, 5))]
        if step == 3:  # another writer, through delta-rs
            others = pa.Table.from_pylist(_pins(10, 90_000, 9), schema=SILVER_SCHEMAS["pin"])
            delta.merge_silver(lake, "pin", others, {"other": 7})
        merged = delta.merge_silver(
            lake, "pin", pa.Table.from_pylist(batch, schema=SILVER_SCHEMAS["pin"]), {"me": step}, handles=handles
        )
        head = handles.head(("silver", "pin"))
        assert head is not None and merged.version == head.version
        fresh = delta.open_table(lake, "silver", "pin")
        assert fresh is not None and int(fresh.version()) == head.version
        remembered = {(f.path, f.low, f.high, f.num_records, f.bucket) for f in head.files()}
        listed = {(f.path, f.low, f.high, f.num_records, f.bucket) for f in data_files._list_files(fresh, "ind")}
        assert remembered == listed, step
        assert head.rows == sum(f[3] for f in listed) and head.size == sum(
            f.size for f in data_files._list_files(fresh, "ind")
        )
        by_bucket = {(f.path, f.bucket) for b in range(SILVER_BUCKETS) for f in head.bucket_files(b)}
        assert by_bucket == {(f[0], f[4]) for f in listed}
        assert head.txn("me") == fresh.transaction_version("me") == step
        assert head.txn("other") == fresh.transaction_version("other") == (7 if step >= 3 else None)
    silver = delta.read_table(lake, "silver", "pin")
    assert silver is not None and silver.num_rows == 3_310 == len(pc.unique(silver.column("ind")))


def test_a_merge_sees_another_writers_commit_through_the_next_commit_file_and_only_then_reads_the_log(
    tmp_path: Path,
) -> None:
    """A kept handle's log head looks for the commit file after its version (one failed read when there is
    none) and folds in another writer's commit when there is one: a file that writer added holding one of the
    merge's keys is then a conflict, and the retry on a fresh handle keeps one row per ``ind``."""
    from pinpipe.errors import CommitConflictError
    from pinpipe.lake.open_tables import DeltaHandles

    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    rows = _pins(200, 0, 0)
    delta.merge_silver(lake, "pin", pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS["pin"]), handles=handles)
    head = handles.head(("silver", "pin"))
    assert head is not None and not head.follow()  # nothing after its own commit
    other = {**rows[7], "title": "from another writer"}
    delta.merge_silver(lake, "pin", pa.Table.from_pylist([other], schema=SILVER_SCHEMAS["pin"]))
    mine = {**rows[7], "title": "from the worker"}
    with pytest.raises(CommitConflictError):
        delta.merge_silver(lake, "pin", pa.Table.from_pylist([mine], schema=SILVER_SCHEMAS["pin"]), handles=handles)
    assert handles.get(("silver", "pin")) is None and handles.head(("silver", "pin")) is None  # dropped
    delta.merge_silver(lake, "pin", pa.Table.from_pylist([mine], schema=SILVER_SCHEMAS["pin"]), handles=handles)
    silver = delta.read_table(lake, "silver", "pin")
    assert silver is not None and silver.num_rows == 200 == len(pc.unique(silver.column("ind")))
    assert silver.filter(pc.equal(silver.column("ind"), rows[7]["ind"])).column("title").to_pylist() == [
        "from the worker"
    ]


def test_data_files_on_a_local_lake_are_written_in_place_and_never_over_another(tmp_path: Path) -> None:
    """``Lake.put_new`` writes a data file whole under a new directory, and refuses a key that exists (a data
    file's name is a fresh UUID: an existing one is a bug, never overwritten)."""
    from pinpipe.errors import PinpipeError

    lake = Lake(f"file://{tmp_path / 'lake'}")
    lake.put_new("silver/pin/bucket=3/part-1.parquet", b"first")
    assert (tmp_path / "lake" / "silver" / "pin" / "bucket=3" / "part-1.parquet").read_bytes() == b"first"
    assert not list((tmp_path / "lake" / "silver" / "pin" / "bucket=3").glob(".*"))  # no temporary file left
    with pytest.raises(PinpipeError):
        lake.put_new("silver/pin/bucket=3/part-1.parquet", b"second")
    assert lake.get("silver/pin/bucket=3/part-1.parquet") == b"first"
