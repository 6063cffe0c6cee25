"""A kept handle's log head (:mod:`pinpipe.lake.log_head`) writes the stream's silver commits itself: what it does
when another writer changed the table under it, when it lost the race for a version, and on a table whose
protocol it cannot write. Real ``file://`` lakes, the product's merge, delta-rs as the other writer and as the
reader."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pinpipe.errors import CommitConflictError
from pinpipe.lake import delta
from pinpipe.lake.log_head import Unfollowable, commit_bytes, log_key, parse_commit
from pinpipe.lake.open_tables import DeltaHandles
from pinpipe.lake.store import Lake
from pinpipe.synth.generate import generate_records
from pinpipe.synth.oracle import clean_record
from pinpipe.tables import SILVER_SCHEMAS
from tests.fixtures.services import Service, moto_lake

GEO = ("silver", "geo")


def _geo(start: int, rows: int) -> pa.Table:
    out = []
    for record in generate_records(rows, 4, start=start)["geo"]:
        row = clean_record("geo", record).row
        assert row is not None
        out.append(row)
    return pa.Table.from_pylist(out, schema=SILVER_SCHEMAS["geo"])


def _silver_inds(lake: Lake) -> list[int]:
    silver = delta.read_table(lake, *GEO)
    assert silver is not None
    return sorted(silver.column("ind").to_pylist())


def _client(lake: Lake, version: int) -> str:
    commit = lake.get(log_key("silver/geo/", version))
    assert commit is not None
    return str(orjson.loads(commit.splitlines()[0])["commitInfo"]["clientVersion"])


def test_a_metadata_change_by_another_writer_sends_the_merge_back_to_a_fresh_handle_and_loses_nothing(
    tmp_path: Path,
) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    delta.merge_silver(lake, "geo", _geo(0, 50), {"w": 50}, handles=handles)
    assert handles.head(GEO) is not None
    other = DeltaTable(lake.table_uri(*GEO))  # another writer changes the table's properties: a metaData commit
    other.alter.set_table_properties({"delta.logRetentionDuration": "interval 60 days"})
    with pytest.raises(Unfollowable) as caught:
        delta.merge_silver(lake, "geo", _geo(50, 50), {"w": 100}, handles=handles)
    assert isinstance(caught.value, CommitConflictError)  # retryable: the stream's retry policy takes it
    assert handles.get(GEO) is None and handles.head(GEO) is None
    merged = delta.merge_silver(lake, "geo", _geo(50, 50), {"w": 100}, handles=handles)  # the retry
    head = handles.head(GEO)
    assert head is not None and merged.version == head.version == delta.table_version(lake, *GEO)
    assert _client(lake, head.version).startswith("pinpipe-")  # the new head writes again
    assert _silver_inds(lake) == list(range(100))
    assert delta.txn_version(lake, "geo", "w") == 100


def test_a_version_another_writer_committed_first_is_a_conflict_and_its_commit_stays(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    delta.merge_silver(lake, "geo", _geo(0, 20), {"w": 20}, handles=handles)
    head = handles.head(GEO)
    assert head is not None
    delta.merge_silver(lake, "geo", _geo(20, 20), {"other": 1})  # delta-rs commits head.version + 1
    taken = lake.get(log_key("silver/geo/", head.version + 1))
    with pytest.raises(CommitConflictError):
        head.commit([], [], {"w": 21})  # as if the head had not looked: the put-if-absent refuses
    assert lake.get(log_key("silver/geo/", head.version + 1)) == taken
    assert head.follow() and head.txn("other") == 1 and head.txn("w") == 20
    delta.merge_silver(lake, "geo", _geo(40, 10), {"w": 50}, handles=handles)
    assert _silver_inds(lake) == list(range(50))
    assert delta.txn_version(lake, "geo", "other") == 1 and delta.txn_version(lake, "geo", "w") == 50


def test_a_table_whose_protocol_pinpipe_cannot_write_is_merged_through_delta_rs(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    delta.merge_silver(lake, "geo", _geo(0, 20))
    DeltaTable(lake.table_uri(*GEO)).alter.add_constraint({"ind_known": "ind >= 0"})  # writer version 3
    handles = DeltaHandles()
    for start in (20, 30):
        merged = delta.merge_silver(lake, "geo", _geo(start, 10), {"w": start + 10}, handles=handles)
        assert handles.head(GEO) is None
        assert merged.version is not None and _client(lake, merged.version).startswith("delta-rs")
    assert _silver_inds(lake) == list(range(40))
    assert delta.txn_version(lake, "geo", "w") == 40


def test_a_commit_the_head_writes_reads_back_as_the_same_actions_and_unknown_actions_are_refused() -> None:
    from pinpipe.lake.data_files import TableFile, WrittenFile

    stats = '{"numRecords":3,"minValues":{"ind":7},"maxValues":{"ind":9},"nullCount":{"ind":0}}'
    added = [WrittenFile("bucket=2/part-a.parquet", 100, 3, stats, 2)]
    removed = [TableFile("bucket=2/part-b.parquet", 80, 2, 7, 8, 2)]
    data = commit_bytes(
        added, removed, {"w": 4}, data_change=True, partition_by=["bucket"], metadata={"k": "v"}, now_ms=1
    )
    commit = parse_commit(data, "file:///t")
    assert commit.added == [TableFile("bucket=2/part-a.parquet", 100, 3, 7, 9, 2)]
    assert commit.removed == ["bucket=2/part-b.parquet"] and commit.txns == {"w": 4}
    assert orjson.loads(data.splitlines()[0])["commitInfo"]["k"] == "v"
    with pytest.raises(Unfollowable, match="metaData"):
        parse_commit(data + orjson.dumps({"metaData": {"id": "x"}}) + b"\n", "file:///t")


@pytest.mark.integration
def test_on_s3_the_head_commits_by_conditional_put_and_follows_delta_rs_commits(moto: Service) -> None:
    """On an S3 lake (moto) the head's commit is a conditional put and its look for a newer version a GET: the
    worker's merges, another writer's delta-rs commit between them, and a reader's fresh open all agree."""
    url, settings = moto_lake(moto)
    lake = Lake(url, settings)
    handles = DeltaHandles()
    delta.merge_silver(lake, "geo", _geo(0, 30), {"w": 30}, handles=handles)
    head = handles.head(GEO)
    assert head is not None and _client(lake, head.version).startswith("pinpipe-")
    delta.merge_silver(lake, "geo", _geo(30, 10), {"other": 1})  # delta-rs, on S3
    with pytest.raises(CommitConflictError):
        head.commit([], [], {"w": 31})  # that version is taken: the conditional put refuses
    merged = delta.merge_silver(lake, "geo", _geo(40, 10), {"w": 50}, handles=handles)
    assert merged.version == head.version == delta.table_version(lake, *GEO)
    assert _silver_inds(lake) == list(range(50))
    assert delta.txn_version(lake, "geo", "w") == 50 and delta.txn_version(lake, "geo", "other") == 1


def test_an_idle_head_whose_version_the_log_cleanup_removed_goes_back_to_delta_rs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a worker sat idle, other writers committed, checkpointed, and expired-log cleanup removed the commit
    files from the head's version on: the head must not take a version number from the gap (its put-if-absent
    would succeed there, and the commit would be lost behind the checkpoint). It refuses, and the retry reopens."""
    from pinpipe.lake import log_head

    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    delta.merge_silver(lake, "geo", _geo(0, 10), {"w": 10}, handles=handles)
    head = handles.head(GEO)
    assert head is not None
    for start in (10, 20, 30):  # other writers, through delta-rs
        delta.merge_silver(lake, "geo", _geo(start, 10), {"other": start})
    latest = delta.table_version(lake, *GEO)
    assert latest is not None
    DeltaTable(lake.table_uri(*GEO)).create_checkpoint()
    log_dir = tmp_path / "lake" / "silver" / "geo" / "_delta_log"
    for version in range(head.version, latest):  # what cleanup of expired commits leaves: the checkpoint on
        (log_dir / f"{version:020d}.json").unlink()
    monkeypatch.setattr(log_head, "IDLE_CHECK_S", 0.0)
    with pytest.raises(Unfollowable, match="no longer holds"):
        delta.merge_silver(lake, "geo", _geo(40, 10), {"w": 50}, handles=handles)
    delta.merge_silver(lake, "geo", _geo(40, 10), {"w": 50}, handles=handles)  # the retry
    assert _silver_inds(lake) == list(range(50))
    assert delta.txn_version(lake, "geo", "w") == 50 and delta.txn_version(lake, "geo", "other") == 30


def test_a_garbled_commit_file_after_the_heads_version_is_named_as_corrupt_state(tmp_path: Path) -> None:
    from pinpipe.errors import CorruptStateError

    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    delta.merge_silver(lake, "geo", _geo(0, 10), {"w": 10}, handles=handles)
    head = handles.head(GEO)
    assert head is not None
    lake.put(log_key("silver/geo/", head.version + 1), b'{"add": {"path": "bucket=1/x.parquet", "si\n')
    with pytest.raises(CorruptStateError, match=f"commit {head.version + 1} of .* is not a Delta commit"):
        delta.merge_silver(lake, "geo", _geo(10, 10), {"w": 20}, handles=handles)


def test_a_resume_after_another_writer_changed_the_metadata_reads_the_positions_afresh(tmp_path: Path) -> None:
    """A worker's resume (:func:`~pinpipe.lake.delta.txn_versions` through its handles, as on a partition
    reassignment) meets a metadata commit its head cannot fold: it reads the positions from a fresh open instead
    of failing, and the next merge starts a new head."""
    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    delta.merge_silver(lake, "geo", _geo(0, 10), {"w": 10}, handles=handles)
    delta.merge_silver(lake, "geo", _geo(10, 10), {"other": 3})
    DeltaTable(lake.table_uri(*GEO)).alter.set_table_properties({"delta.logRetentionDuration": "interval 60 days"})
    assert delta.txn_versions(lake, "geo", ["w", "other", "none"], handles=handles) == {
        "w": 10,
        "other": 3,
        "none": None,
    }
    assert handles.head(GEO) is None and handles.opens[GEO] == 2
    delta.merge_silver(lake, "geo", _geo(20, 10), {"w": 30}, handles=handles)
    assert handles.head(GEO) is not None and _silver_inds(lake) == list(range(30))
