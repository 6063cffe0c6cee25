"""What one Spark executor task does to merge whole silver buckets: the copy-on-write upsert of a bucketed table.

:func:`bucket_merge_task` is the ``mapInArrow`` function :func:`pinpipe.engine.spark_buckets.merge_buckets`
runs over the batch repartitioned by bucket, so each task holds every row of the buckets it sees. For each of them
the task runs :func:`pinpipe.lake.bucket_merge.merge_bucket` — the same upsert the stream worker and the DuckDB
batch run on the driver: only the files whose ``ind`` statistics can hold a key are read, each file holding an
updated row is rewritten on its own, the inserts go to new files under ``bucket=N/``.

Out come :data:`RESULT_SCHEMA` rows: one per file added or to remove, and one with the bucket's counts. The files
are complete in the store before their rows are returned; the driver commits them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.engine.spark_io import ArrowTask, LakeRef
from pinpipe.lake.bucket_merge import BucketMerge, merge_bucket
from pinpipe.lake.data_files import TableFile, cast_to
from pinpipe.tables import SILVER_BUCKET

ROLE = "_role"
"""The input column telling a winner (0: the row that goes to silver) from a first record (1: the earliest good
record of an ``ind`` that had several in the run, compared with silver to count conflicts)."""

RESULT_SCHEMA = pa.schema(
    [
        pa.field("op", pa.string(), nullable=False),
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("num_records", pa.int64()),
        pa.field("stats", pa.string()),
        pa.field("inserted", pa.int64()),
        pa.field("updated", pa.int64()),
        pa.field("unchanged", pa.int64()),
        pa.field("changed_firsts", pa.int64()),
        pa.field("files_read", pa.int64()),
    ]
)
"""``op`` ``"add"`` (a file written: path, size, num_records, stats), ``"remove"`` (an existing file rewritten:
path) or ``"counts"`` (the bucket's inserted, updated, unchanged, changed_firsts and files_read)."""


def bucket_merge_task(
    ref: LakeRef,
    prefix: str,
    schema: pa.Schema,
    files: Mapping[int, Sequence[TableFile]],
    rows_per_file: int,
) -> ArrowTask:
    """The ``mapInArrow`` function over ``schema`` rows plus ``bucket`` and :data:`ROLE` (see the module
    docstring); ``files`` are the table's files by bucket, ``prefix`` the table's key prefix in the lake."""

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [b for b in batches if b.num_rows]
        if not parts:
            return
        rows = pa.Table.from_batches(parts)
        del parts
        lake = ref.open()
        buckets = pc.unique(rows.column(SILVER_BUCKET)).to_pylist()
        for bucket in sorted(buckets):
            mine = rows.filter(pc.equal(rows.column(SILVER_BUCKET), bucket))
            role = mine.column(ROLE)
            winners = cast_to(mine.filter(pc.equal(role, 0)), schema)
            firsts = cast_to(mine.filter(pc.equal(role, 1)), schema)
            done = merge_bucket(
                lake, prefix, schema, int(bucket), winners, firsts, files.get(int(bucket), ()), rows_per_file
            )
            yield pa.RecordBatch.from_pylist(result_rows(int(bucket), done), schema=RESULT_SCHEMA)

    return task


def result_rows(bucket: int, done: BucketMerge) -> list[dict[str, Any]]:
    """One bucket's merge as :data:`RESULT_SCHEMA` rows: its files added and removed, then its counts."""
    out: list[dict[str, Any]] = [
        {"op": "add", "bucket": bucket, "path": f.path, "size": f.size, "num_records": f.num_records, "stats": f.stats}
        for f in done.added
    ]
    out.extend({"op": "remove", "bucket": bucket, "path": path} for path in done.removed)
    counts = ("inserted", "updated", "unchanged", "changed_firsts", "files_read")
    out.append({"op": "counts", "bucket": bucket, **{name: getattr(done, name) for name in counts}})
    return out
