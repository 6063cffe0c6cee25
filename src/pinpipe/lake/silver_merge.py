"""A bucketed silver table's upsert, and what an upsert reports (:class:`MergeStats`).

Called by :func:`pinpipe.lake.delta.merge_silver` (which opens or creates the table, holds its handle and sends
tables without the bucket column to delta-rs's MERGE). :func:`merge_files` plans the files with
:func:`~pinpipe.lake.bucket_merge.plan_merge` and commits them in one delta-rs transaction with the run's
application transactions, after checking that no other writer touched what the plan read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from pinpipe.lake.bucket_merge import by_bucket, plan_merge, rows_per_file_of
from pinpipe.lake.data_files import (
    TableFile,
    check_unchanged,
    commit_files,
    remember_files,
    row_metadata,
    table_files,
    table_prefix,
    written_table_file,
)
from pinpipe.lake.log_head import LogHead
from pinpipe.lake.open_tables import delta_errors
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_SCHEMAS, Kind

SILVER_FILE_BYTES: dict[Kind, int] = {"pin": 256 * 1024, "geo": 256 * 1024, "user": 256 * 1024}
"""``delta.targetFileSize`` of each silver table created (about 1,000–1,400 pin rows, 10,000 geo or user rows a
file; a table keeps the size it was created with): a merge rewrites every file holding a row it updates
(copy-on-write), so the file size bounds what one updated row costs, and the file count what a merge has to
prune. Pin files were 1 MiB until the stream's commits stopped costing time per file (the log head,
:mod:`pinpipe.lake.log_head`): at 10M rows per kind, a micro-batch of 300 new and 6 updated old ``ind`` took
184 ms into 1 MiB pin files and 90 ms into 256 KiB ones (45 ms into an empty table), the rewrites of the six
files holding the old ``ind`` being the difference."""


@dataclass(frozen=True)
class MergeStats:
    """What one :func:`merge_silver` did. ``version`` is the table version it committed, None if it committed
    nothing (nothing to change and no application transactions)."""

    inserted: int
    updated: int
    unchanged: int
    version: int | None
    files_rewritten: int = 0
    """Data files the MERGE removed (copy-on-write: each held a row it updated)."""
    files_added: int = 0
    rows_before: int = 0
    """Rows of the snapshot the MERGE read, from the log's file statistics."""
    rows_after: int = 0
    """Rows of the version it committed (``rows_before`` if it committed nothing)."""
    files_read: int | None = None
    """Data files whose statistics could hold one of its keys (None: delta-rs's MERGE, which does not say)."""
    changed_firsts: int | None = None
    """How many merged ``ind`` s' first records (``firsts``, else the row) differ from silver's row."""
    updated_keys: np.ndarray[Any, Any] | None = None
    """The ``ind`` s of the rows it updated. Both None: delta-rs's MERGE, which does not say."""


def merge_files(
    lake: Lake,
    kind: Kind,
    dt: DeltaTable,
    silver: pa.Table,
    app_txns: Mapping[str, int] | None,
    buckets: int,
    firsts: pa.Table | None,
    head: LogHead | None = None,
) -> MergeStats:
    """:func:`pinpipe.lake.delta.merge_silver` into a bucketed silver table: :func:`~pinpipe.lake.bucket_merge.plan_merge` writes the files
    (each rewritten file on its own, inserts apart), then one commit removes the rewritten ones, adds the new ones
    and records ``app_txns``, after :func:`~pinpipe.lake.data_files.check_unchanged` made sure no other writer
    touched them since the snapshot the plan read. With ``head`` (a kept handle's
    :class:`~pinpipe.lake.log_head.LogHead`) the plan reads the head's files and the head writes the commit; else
    delta-rs commits on ``dt``."""
    parts = ("silver", kind)
    schema = SILVER_SCHEMAS[kind]
    with delta_errors("listing silver files", dt.table_uri):
        target = int(dt.metadata().configuration.get("delta.targetFileSize") or SILVER_FILE_BYTES[kind])
        if head is not None:  # the head's files by bucket and totals: the plan costs the buckets it touches
            files: list[TableFile] = []
            files_of: Callable[[int], Sequence[TableFile]] = head.bucket_files
            rows_before, size = head.rows, head.size
        else:
            files = table_files(dt)
            files_of = by_bucket(files)
            rows_before, size = sum(f.num_records for f in files), sum(f.size for f in files)
    with delta_errors("merging into silver", dt.table_uri):
        plan = plan_merge(
            lake,
            table_prefix(*parts),
            schema,
            silver,
            buckets,
            files_of,
            rows_per_file_of(target, kind, rows_before, size),
            firsts,
        )
    stats = MergeStats(
        plan.inserted,
        plan.updated,
        plan.unchanged,
        None,
        files_rewritten=len(plan.removed),
        files_added=len(plan.added),
        rows_before=rows_before,
        rows_after=rows_before + plan.inserted,
        files_read=plan.files_read,
        changed_firsts=plan.changed_firsts,
        updated_keys=np.concatenate(plan.updated_keys) if plan.updated_keys else np.empty(0, np.int64),
    )
    if not plan.added and not plan.removed and not app_txns:
        return stats
    metadata = row_metadata(plan.inserted, plan.updated)
    if head is not None:
        removed = [head.file(p) for p in plan.removed]
        with delta_errors("merging into silver", dt.table_uri):
            head.check_unchanged(plan.removed, plan.keys)
            version = head.commit(plan.added, removed, app_txns, metadata=metadata)
        return replace(stats, version=version)
    by_path = {f.path: f for f in files}
    removed = [by_path[p] for p in plan.removed]
    check_unchanged(dt, files, plan.removed, set(plan.keys), plan.keys)
    base_version = int(dt.version())
    base = table_files(dt)  # the files of the version the commit goes on top of
    commit_files(lake, parts, schema, plan.added, removed, app_txns, dt, metadata=metadata)
    version = reload(dt)
    if version == base_version + 1:  # nothing landed in between: the new version's files are known
        gone = set(plan.removed)
        remember_files(
            dt, version, [f for f in base if f.path not in gone] + [written_table_file(f) for f in plan.added]
        )
    return replace(stats, version=version)


def reload(dt: DeltaTable) -> int:
    """Bring ``dt`` to the table's latest version; that version."""
    dt.update_incremental()
    return int(dt.version())
