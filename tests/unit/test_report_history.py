"""Who wrote silver: commits told apart by their application transactions, on tables written through the real
Delta writer (:func:`pinpipe.lake.delta.merge_silver`) and compacted by delta-rs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.report.history import silver_history
from pinpipe.tables import BATCH_APP_PREFIX, SILVER_SCHEMAS, STREAM_APP_PREFIX, batch_app_id, stream_app_id


def _users(first: int, n: int, name: str = "A B") -> pa.Table:
    rows = [{"ind": i, "user_name": name, "age": 30, "date_joined": None} for i in range(first, first + n)]
    return pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS["user"])


def test_the_prefixes_are_those_the_writers_use() -> None:
    assert batch_app_id("p.user", 0).startswith(BATCH_APP_PREFIX)
    assert stream_app_id("streaming-p-user", 0).startswith(STREAM_APP_PREFIX)


def test_history_splits_rows_by_writer_and_adds_up_to_the_table(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    delta.merge_silver(lake, "user", _users(0, 30), {stream_app_id("streaming-p-user", 0): 30})
    delta.merge_silver(lake, "user", _users(30, 20), {stream_app_id("streaming-p-user", 0): 50})
    # batch re-reads 10 rows the stream wrote (identical: collapsed), changes 5, inserts 15 new ones
    batch = pa.concat_tables([_users(20, 10), _users(0, 5, name="C D"), _users(50, 15)])
    delta.merge_silver(lake, "user", batch, {batch_app_id("p.user", 0): 30})
    DeltaTable(lake.table_uri("silver", "user")).optimize.compact()
    delta.merge_silver(lake, "user", _users(65, 0), {batch_app_id("p.user", 0): 31})  # progress only

    history = silver_history(lake, "user", delta.row_count(lake, "silver", "user"))
    assert history is not None and history.complete
    assert history.rows == 65
    assert dict(history.inserted) == {"stream": 50, "batch": 15, "compaction": 0}
    assert history.updated["batch"] == 5 and history.updated["stream"] == 0
    assert dict(history.commit_counts) == {"stream": 2, "batch": 2, "compaction": 1}
    assert history.earlier == 0
    assert history.last is not None and history.last.writer == "batch" and history.last.inserted == 15


def test_rows_older_than_the_commits_read_are_reported_as_earlier(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    for start in range(0, 40, 10):
        delta.merge_silver(lake, "user", _users(start, 10), {stream_app_id("streaming-p-user", 0): start + 10})
    history = silver_history(lake, "user", 40, max_commits=2)
    assert history is not None and not history.complete
    assert history.inserted["stream"] == 20 and history.earlier == 20


def test_no_silver_table_has_no_history(tmp_path: Path) -> None:
    assert silver_history(Lake(f"file://{tmp_path}"), "pin", None) is None
