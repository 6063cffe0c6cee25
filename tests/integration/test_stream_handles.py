"""The stream worker opens each Delta table once per process and commits from the handle it keeps (a bucketed
silver table's through the handle's log head, which writes the commits itself); a handle made stale by another
writer is never committed blindly.

Structural, not timed: the worker runs on the in-memory log and a ``file://`` lake and the test reads its
:class:`~pinpipe.lake.open_tables.DeltaHandles` counters and the tables' versions. The other writer is the batch
job's own path (:func:`pinpipe.lake.delta.merge_silver` without handles, a fresh table load per call, committed by
delta-rs), committing between two of the worker's micro-batches — rows for the same ``ind`` the worker's next batch
holds (the worker's conflict check must refuse its commit; the worker drops the handle, reopens and commits again),
or for other ``ind`` (the worker's commit lands on top of it, and the head holds both).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pinpipe.engine import DuckDBEngine
from pinpipe.lake import delta
from pinpipe.lake.data_files import OPERATION
from pinpipe.lake.store import Lake
from pinpipe.log.feed import LogFeed
from pinpipe.log.memory import MemoryLog
from pinpipe.stream.compaction import Compactor, CompactSchedule
from pinpipe.stream.worker import StreamOptions, StreamWorker
from pinpipe.synth.faults import send_list
from pinpipe.synth.generate import generate_records
from pinpipe.synth.oracle import clean_record, expected_output
from pinpipe.tables import KINDS, RAW_TABLES, SILVER_SCHEMAS, topic_name
from pinpipe.tables import stream_app_id as app_id

PREFIX = "h"
GEO = topic_name(PREFIX, "geo")


@pytest.fixture(scope="module")
def engine() -> Iterator[DuckDBEngine]:
    e = DuckDBEngine()
    yield e
    e.close()


def _worker(log: MemoryLog, lake: Lake, engine: DuckDBEngine, compactor: Compactor | None = None) -> StreamWorker:
    options = StreamOptions(prefix=PREFIX, max_batch=60, max_wait_ms=20, idle_stop_s=0.3)
    return StreamWorker(LogFeed(log, PREFIX, "handles-test"), lake, engine, options, compactor=compactor)


def _append(log: MemoryLog, kind: str, records: list[Any]) -> None:
    key = RAW_TABLES[kind].key
    keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
    log.append(topic_name(PREFIX, kind), [orjson.dumps(r) for r in records], keys)


def test_the_worker_opens_each_table_once_over_many_batches_and_compactions(
    tmp_path: Path, engine: DuckDBEngine
) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    sent = send_list(300, 11, resend_rate=0.1, conflict_rate=0.1, faults=0.08).by_kind()
    log.ensure_topics([topic_name(PREFIX, k) for k in KINDS], 2)
    for kind, records in sent.items():
        _append(log, kind, records)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    compactor = Compactor(lake, CompactSchedule(batches=3))
    worker = _worker(log, lake, engine, compactor)
    worker.run(threading.Event())

    assert worker.batches >= 10 and compactor.runs >= 3  # many commits, and compactions between them
    handles = worker.handles
    tables = {("silver", k) for k in KINDS} | {("quarantine", k) for k in KINDS}
    assert set(handles.opens) == tables
    assert all(n == 1 for n in handles.opens.values()), handles.opens  # opened (or created) once each
    assert not handles.discards
    for kind in KINDS:
        version = delta.table_version(lake, "silver", kind)
        assert version is not None and version >= 5
        # version 0 is the creation, 1 the first merge: every later commit came through the kept handle (a
        # compaction opens it once and commits once per bucket it packs)
        history = DeltaTable(lake.table_uri("silver", kind)).history()
        packed = sum(1 for c in history if c.get(OPERATION) == "OPTIMIZE")
        assert handles.reuses[("silver", kind)] + packed >= version - 1, (kind, handles.reuses, version, packed)
        head = handles.head(("silver", kind))
        assert head is not None and head.version == version  # the handle's log head holds the latest version
    expected = expected_output(sent)
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        assert silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind


def _geo_rows(records: list[dict[str, Any]], country: str) -> pa.Table:
    rows = []
    for record in records:
        row = clean_record("geo", {**record, "country": country}).row
        assert row is not None
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS["geo"])


def _geo_silver(lake: Lake) -> dict[int, str]:
    silver = delta.read_table(lake, "silver", "geo")
    assert silver is not None
    inds = silver.column("ind").to_pylist()
    assert len(inds) == len(set(inds)), "one row per ind"
    return dict(zip(inds, silver.column("country").to_pylist(), strict=True))


def test_a_handle_made_stale_by_a_concurrent_batch_is_refreshed_never_committed_blindly(
    tmp_path: Path, engine: DuckDBEngine
) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    log.ensure_topics([GEO], 1)
    geo = [{**r, "country": "Stream"} for r in generate_records(150, 5)["geo"]]
    lake = Lake(f"file://{tmp_path / 'lake'}")
    worker = _worker(log, lake, engine)
    key = ("silver", "geo")

    _append(log, "geo", geo[:50])
    while worker.step() is not None or worker.busy or worker.feed.lag().get((GEO, 0)):
        pass
    version = delta.table_version(lake, "silver", "geo")
    assert worker.handles.opens[key] == 1 and version is not None

    # another writer (the batch job's path: a fresh load per call) commits rows for ind 50..99 ...
    delta.merge_silver(lake, "geo", _geo_rows(geo[50:100], "Batch"), app_txns={"pinpipe-batch:x:0": 1})
    # ... which the worker's next batch holds too: its handle (at `version`) does not know them
    _append(log, "geo", geo[50:100])
    while worker.step() is not None or worker.busy or worker.feed.lag().get((GEO, 0)):
        pass
    assert worker.handles.discards[key] == 1  # the stale commit was refused; the handle was dropped
    assert worker.handles.opens[key] == 2  # and reopened at the latest version for the retry
    assert worker.metrics.retries._value.get() >= 1
    silver = _geo_silver(lake)
    assert len(silver) == 100 and {silver[r["ind"]] for r in geo[50:100]} == {"Stream"}  # the later commit won

    # a concurrent commit that touches none of the worker's keys: the worker commits on top, without a retry
    delta.merge_silver(lake, "geo", _geo_rows(geo[100:120], "Batch"), app_txns={"pinpipe-batch:x:0": 2})
    _append(log, "geo", geo[120:150])
    while worker.step() is not None or worker.busy or worker.feed.lag().get((GEO, 0)):
        pass
    worker.close()
    assert worker.handles.discards[key] == 1 and worker.handles.opens[key] == 2
    head = worker.handles.head(key)
    assert head is not None and head.version == delta.table_version(lake, "silver", "geo")
    assert head.txn("pinpipe-batch:x:0") == 2  # the head holds the other writer's commit too
    silver = _geo_silver(lake)
    assert len(silver) == 150
    assert {silver[r["ind"]] for r in geo[100:120]} == {"Batch"}
    assert {silver[r["ind"]] for r in geo[120:150]} == {"Stream"}
    assert delta.txn_version(lake, "geo", app_id(GEO, 0)) == 130  # every record the worker read (50 + 50 + 30)


def test_commits_through_a_kept_handle_write_checkpoints_so_a_fresh_open_replays_a_bounded_log(tmp_path: Path) -> None:
    """The log head has delta-rs write a checkpoint every ``delta.checkpointInterval`` (100) versions of its own
    commits, as delta-rs's post-commit hook does for its commits: a restarted worker or a reader replays at most
    100 commit files, however long it ran."""
    from pinpipe.lake.open_tables import DeltaHandles

    lake = Lake(f"file://{tmp_path / 'lake'}")
    handles = DeltaHandles()
    records = generate_records(215, 3)["geo"]
    for i in range(0, 215, 2):  # version 0 is the creation, then one merge per pair of rows: version 108
        delta.merge_silver(lake, "geo", _geo_rows(records[i : i + 2], "X"), app_txns={"w": i + 2}, handles=handles)
    assert handles.opens[("silver", "geo")] == 1
    handles.close()  # the checkpoint is written in the background: the worker's close waits for it
    log_dir = tmp_path / "lake" / "silver" / "geo" / "_delta_log"
    checkpoint = orjson.loads((log_dir / "_last_checkpoint").read_bytes())["version"]
    assert (log_dir / f"{checkpoint:020d}.checkpoint.parquet").is_file()
    assert 108 - 100 < checkpoint <= 108  # what a fresh open replays: the commits after it, fewer than 100
    head = handles.head(("silver", "geo"))
    assert head is not None and head.version == delta.table_version(lake, "silver", "geo") == 108
    assert delta.txn_version(lake, "geo", "w") == 216
    assert len(_geo_silver(lake)) == 215


def test_batches_go_on_while_a_compaction_runs_and_a_packed_file_rewritten_meanwhile_is_a_conflict(
    tmp_path: Path, engine: DuckDBEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compactor runs on its own thread: while one compaction is held inside its reading and writing, the
    worker still commits micro-batches. Then a real compaction whose packed file a merge rewrote in between commits
    nothing (a conflict, retried on the next snapshot), and silver ends with exactly the oracle's rows."""
    log = MemoryLog(uuid.uuid4().hex)
    log.ensure_topics([topic_name(PREFIX, k) for k in KINDS], 1)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    running, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def held_compaction(lake: Lake, *parts: str) -> Any:
        calls.append(parts[1])
        running.set()
        release.wait(30)  # the test lets it go once it saw batches commit meanwhile
        running.clear()
        return {}

    compactor = Compactor(lake, CompactSchedule(batches=1), compact=held_compaction)
    worker = _worker(log, lake, engine, compactor)
    generated = generate_records(40, 5, start=1000)
    _append(log, "geo", generated["geo"][:10])
    assert worker.step() is None  # the first batch is in flight
    worker.drain()
    worker.step()  # one committed batch makes a compaction due: it starts on its thread
    assert running.wait(10) and calls == ["pin"]
    before = worker.batches
    for i in range(3):
        _append(log, "geo", generated["geo"][10 + i * 10 : 20 + i * 10])
        worker.step()
        worker.drain()
    assert running.is_set() and worker.batches >= before + 3  # committed while the compaction was held
    release.set()
    worker.close()
    assert not running.is_set() and len(calls) >= 1

    # merges that rewrite packed files between a compaction's planning and its commit: the groups they touched
    # are left out, the others committed; when every group was touched, nothing is committed (a conflict)
    import pyarrow.parquet as pq

    import pinpipe.stream.compaction as compaction
    from pinpipe.errors import CommitConflictError

    rows = {r["ind"]: r for r in (clean_record("geo", g).row for g in generated["geo"]) if r is not None}

    def small_files(start: int) -> None:  # small files in every bucket: a group to pack in each
        more = [r for r in (clean_record("geo", g).row for g in generate_records(80, 6, start=start)["geo"]) if r]
        for i in range(0, 80, 20):
            delta.merge_silver(lake, "geo", pa.Table.from_pylist(more[i : i + 20], schema=SILVER_SCHEMAS["geo"]))
        rows.update({r["ind"]: r for r in more})

    pack = compaction.pack_files
    changed: dict[int, str] = {}
    merged: list[int] = []

    def pack_then_a_merge_rewrites(calls: int | None) -> Any:
        """pack_files, then a merge rewrites a file of its first group: in the first ``calls`` calls (None: all)."""
        seen = [0]

        def packing_of(*args: Any) -> Any:
            packing = pack(*args)
            seen[0] += 1
            if packing.groups and (calls is None or seen[0] <= calls):
                path = tmp_path / "lake" / "silver" / "geo" / packing.groups[0][0].path
                ind = int(pq.read_table(path).column("ind")[0].as_py())
                changed[ind] = f"Elsewhere {len(merged)}"
                row = {**rows[ind], "country": changed[ind]}
                delta.merge_silver(lake, "geo", pa.Table.from_pylist([row], schema=SILVER_SCHEMAS["geo"]))
                merged.append(ind)
            return packing

        return packing_of

    # one attempt per bucket: the group a merge touched is left out, every other bucket's is committed
    small_files(2000)
    monkeypatch.setattr(compaction, "BUCKET_ATTEMPTS", 1)
    monkeypatch.setattr(compaction, "pack_files", pack_then_a_merge_rewrites(1))
    result = compaction.compact_table(lake, "silver", "geo")
    assert result is not None and result["groupsDropped"] == 1 and result["numFilesRemoved"] > 0
    # two attempts (the default): the touched bucket is planned again on the new snapshot and packed
    small_files(3000)
    monkeypatch.setattr(compaction, "BUCKET_ATTEMPTS", 2)
    monkeypatch.setattr(compaction, "pack_files", pack_then_a_merge_rewrites(1))
    result = compaction.compact_table(lake, "silver", "geo")
    assert result is not None and result["groupsDropped"] == 0 and result["numFilesRemoved"] > 0
    # a merge during every packing: nothing is committed, and the compaction says so (a conflict, retried later)
    small_files(4000)
    monkeypatch.setattr(compaction, "pack_files", pack_then_a_merge_rewrites(None))
    version, before = delta.table_version(lake, "silver", "geo") or 0, len(merged)
    with pytest.raises(CommitConflictError):
        compaction.compact_table(lake, "silver", "geo")
    assert delta.table_version(lake, "silver", "geo") == version + len(merged) - before  # the merges' commits only

    silver = delta.read_table(lake, "silver", "geo")
    assert silver is not None
    got = {r["ind"]: r["country"] for r in silver.to_pylist()}
    assert len(got) == silver.num_rows == 280
    assert all(got[i] == changed.get(i, rows[i]["country"]) for i in got)
