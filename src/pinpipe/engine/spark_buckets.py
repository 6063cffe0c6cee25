"""The silver upsert into a bucketed table (the layout :mod:`pinpipe.lake.delta` creates) done by Spark executors.

Who calls what: the Spark batch job (:func:`pinpipe.batch.spark_job`) calls :func:`merge_buckets` per kind with
the run's winners (one row per ``ind``) and first records. The driver

1. creates the table, empty and bucketed exactly as the DuckDB engine does, when there is none
   (:func:`pinpipe.lake.delta.merge_silver` with no rows creates it and commits nothing else);
2. plans from one snapshot: the table's files by bucket (paths, sizes and ``ind`` statistics: metadata only) and
   the rows per file its ``delta.targetFileSize`` asks for;
3. runs :func:`~pinpipe.engine.spark_bucket_task.bucket_merge_task` over the batch repartitioned by bucket
   (``bucket = crc32(cast(ind as string)) % buckets`` in Spark, the same number as
   :func:`pinpipe.tables.silver_bucket`): every task merges whole buckets, reading only the files of its buckets
   that can hold its keys and writing new files under ``bucket=N/``;
4. commits the tasks' adds and removes (with their partition values) and the application transactions in one
   delta-rs commit on the planned snapshot. delta-rs fails it if another writer removed one of those files or
   committed the same application ids since (:class:`~pinpipe.errors.CommitConflictError`); before committing,
   the driver also checks that no commit since the snapshot added files to a bucket this merge wrote (a plain
   append would not conflict in delta-rs).

What passes through the driver: file lists, per-bucket counts and the written files' metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from pinpipe.engine.spark import SparkEngine
from pinpipe.engine.spark_bucket_task import RESULT_SCHEMA, ROLE, bucket_merge_task
from pinpipe.engine.spark_io import LakeRef
from pinpipe.engine.spark_merge import MergeCounts, spark_schema
from pinpipe.errors import CommitConflictError
from pinpipe.lake import delta
from pinpipe.lake.bucket_merge import rows_per_file
from pinpipe.lake.data_files import (
    TableFile,
    WrittenFile,
    check_unchanged,
    commit_files,
    row_metadata,
    table_files,
    table_prefix,
)
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_BUCKET, SILVER_BUCKETS, SILVER_BUCKETS_KEY, SILVER_SCHEMAS, Kind

log = logging.getLogger("pinpipe.engine.spark_buckets")


def bucket_count(dt: Any) -> int | None:
    """The bucket count of a silver table (``pinpipe.silver.buckets`` in its configuration), None if the table
    has no bucket column (a table created before silver carried it)."""
    if SILVER_BUCKET not in {f.name for f in dt.schema().fields}:
        return None
    return int(dt.metadata().configuration.get(SILVER_BUCKETS_KEY) or SILVER_BUCKETS)


def is_bucketed(dt: Any, kind: Kind) -> bool:
    """True if executors can merge into ``dt`` with :func:`merge_buckets`: the SPEC columns then ``bucket``,
    partitioned by it."""
    names = [f.name for f in pa.schema(dt.schema().to_arrow())]
    return names == [*SILVER_SCHEMAS[kind].names, SILVER_BUCKET] and list(dt.metadata().partition_columns) == [
        SILVER_BUCKET
    ]


def bucket_of(F: Any, buckets: int) -> Any:
    """Spark's column for the bucket of ``ind``: CRC32 of its decimal digits modulo ``buckets``."""
    return (F.crc32(F.col("ind").cast("string")) % F.lit(buckets)).cast("int")


def create_silver(lake: Lake, kind: Kind) -> None:
    """Create ``silver/<kind>`` empty and bucketed (a conflict-checked version 0) if it does not exist."""
    delta.merge_silver(lake, kind, SILVER_SCHEMAS[kind].empty_table())


def merge_buckets(
    engine: SparkEngine,
    lake: Lake,
    ref: LakeRef,
    kind: Kind,
    winners: Any,
    firsts: Any,
    app_txns: Mapping[str, int] | None,
) -> MergeCounts:
    """Upsert ``winners`` (a DataFrame of ``SILVER_SCHEMAS[kind]`` rows, one per ``ind``) into
    ``silver/<kind>`` (see the module docstring); ``firsts`` are the first records of the ``ind`` that came more
    than once (compared with silver for conflicts). Commits nothing if nothing changed and there are no
    ``app_txns``."""
    F = engine.F
    schema = SILVER_SCHEMAS[kind]
    parts = ("silver", kind)
    create_silver(lake, kind)
    dt = delta.open_table(lake, *parts)
    if dt is None or not is_bucketed(dt, kind):
        raise CommitConflictError(f"silver/{kind} was replaced while the batch was starting", table=lake.url)
    buckets = bucket_count(dt) or SILVER_BUCKETS
    files = table_files(dt)
    by_bucket: dict[int, list[TableFile]] = {}
    for f in files:
        by_bucket.setdefault(int(f.bucket or 0), []).append(f)
    rows = winners.select(*schema.names, F.lit(0).cast("byte").alias(ROLE)).unionByName(
        firsts.select(*schema.names, F.lit(1).cast("byte").alias(ROLE))
    )
    rows = rows.withColumn(SILVER_BUCKET, bucket_of(F, buckets))
    rows = rows.repartition(min(buckets, max(1, engine.parallelism * 2)), SILVER_BUCKET)
    target = int(dt.metadata().configuration.get("delta.targetFileSize") or delta.SILVER_FILE_BYTES[kind])
    task = bucket_merge_task(ref, table_prefix(*parts), schema, by_bucket, rows_per_file(target, kind, files))
    result = engine.to_arrow(rows.mapInArrow(task, spark_schema(RESULT_SCHEMA)))
    added: list[WrittenFile] = []
    removed: list[TableFile] = []
    totals = dict.fromkeys(("inserted", "updated", "unchanged", "changed_firsts", "files_read"), 0)
    known = {f.path: f for f in files}
    for row in result.to_pylist():
        if row["op"] == "add":
            added.append(WrittenFile(row["path"], row["size"], row["num_records"], row["stats"], row["bucket"]))
        elif row["op"] == "remove":
            removed.append(known[row["path"]])
        else:
            for name in totals:
                totals[name] += int(row[name])
    if added or removed or app_txns:
        check_unchanged(dt, files, [f.path for f in removed], {f.bucket for f in added} | {f.bucket for f in removed})
        metadata = row_metadata(totals["inserted"], totals["updated"])
        commit_files(lake, parts, schema, added, removed, app_txns, dt, metadata=metadata)
    log.info(
        "merged silver by bucket",
        extra={"fields": {"kind": kind, **totals, "files_removed": len(removed), "files_added": len(added)}},
    )
    return MergeCounts(
        totals["inserted"],
        totals["updated"],
        totals["unchanged"],
        totals["changed_firsts"],
        files_read=totals["files_read"],
        files_removed=len(removed),
        files_added=len(added),
    )
