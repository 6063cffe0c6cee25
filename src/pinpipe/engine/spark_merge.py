"""Delta writes done by Spark executors and committed by the driver through delta-rs (no Delta jars needed).

- :func:`merge_by_ind` — the silver upsert of :func:`pinpipe.lake.delta.merge_silver`, copy-on-write: the files
  of the current snapshot whose ``ind`` range (file statistics) meets the batch's are read by executors and
  joined with the batch on ``ind``; every file holding a row that changes is rewritten whole (its other rows kept),
  new ``ind`` go to new files, identical rows change nothing. The driver commits removes + adds + the
  application transactions in one commit on the snapshot it planned from (a concurrent writer that removed one
  of those files makes it fail: :class:`~pinpipe.errors.CommitConflictError`).
- :func:`insert_absent` — the quarantine insert-if-absent by ``(topic, partition, offset)``.

Only metadata passes through the driver: the snapshot's file list, the batch's ``ind`` range, the paths,
sizes and statistics of the files written, and the counts. Bucketed silver is merged by
:mod:`pinpipe.engine.spark_buckets`; :func:`merge_by_ind` is for a silver table created before silver carried
the bucket column, and :func:`supported` says whether a table has the layout these functions write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pinpipe.engine.spark import SparkEngine
from pinpipe.engine.spark_io import FILES_SCHEMA, LakeRef, read_parquet_task, write_parquet_task
from pinpipe.lake import delta
from pinpipe.lake.data_files import TableFile, WrittenFile, commit_files, table_files, table_prefix
from pinpipe.lake.store import Lake

ROWS_PER_FILE = 500_000
"""Target rows per Parquet file an executor writes."""


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int
    changed_firsts: int
    """Rows of ``firsts`` whose ``ind`` the table held with other content (conflicts with silver)."""
    files_read: int | None = None
    """Existing data files the merge read (None: not counted)."""
    files_removed: int = 0
    files_added: int = 0


def open_table(lake: Lake, *parts: str) -> Any:
    """The table's current snapshot (a ``DeltaTable``), None if there is none."""
    return delta.open_table(lake, *parts)


def supported(dt: Any, schema: pa.Schema) -> bool:
    """True if executors can merge into ``dt``: no partition columns and exactly the columns of ``schema``."""
    if dt is None:
        return True
    names = [f.name for f in pa.schema(dt.schema().to_arrow())]
    return not dt.metadata().partition_columns and names == schema.names


def spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def read_files(
    engine: SparkEngine,
    ref: LakeRef,
    parts: Sequence[str],
    files: Sequence[TableFile],
    schema: pa.Schema,
    *,
    with_file: bool = False,
) -> Any:
    """A DataFrame over the rows of ``files`` of the table at ``parts`` (``schema``'s columns; ``_file`` too
    if ``with_file``), read by executors, one task per few files."""
    out_schema = schema.append(pa.field("_file", pa.string())) if with_file else schema
    paths = engine.session.createDataFrame([(f.path,) for f in files], "path string")
    paths = paths.repartition(max(1, min(len(files), engine.parallelism * 2)))
    task = read_parquet_task(ref, table_prefix(*parts), schema, with_file)
    return paths.mapInArrow(task, spark_schema(out_schema))


def write_files(
    engine: SparkEngine, ref: LakeRef, parts: Sequence[str], df: Any, schema: pa.Schema, rows: int, key: str | None
) -> list[WrittenFile]:
    """Executors write ``df`` (about ``rows`` rows) as Parquet files of the table at ``parts``, ordered by
    ``key`` within each file (and by ranges of it across files); the files' metadata."""
    count = max(1, min(64, math.ceil(rows / ROWS_PER_FILE)))
    # one file needs no range boundaries (repartitionByRange samples the data in a job of its own)
    df = df.repartition(count) if key is None or count == 1 else df.repartitionByRange(count, key)
    if key is not None:
        df = df.sortWithinPartitions(key)
    task = write_parquet_task(ref, table_prefix(*parts), schema)
    written = engine.to_arrow(df.mapInArrow(task, spark_schema(FILES_SCHEMA)))
    return WrittenFile.rows(written)


def _overlaps(f: TableFile, lo: int, hi: int) -> bool:
    """True if ``f`` may hold a key in [lo, hi] (a file without statistics may hold any)."""
    return f.low is None or f.high is None or (f.low <= hi and f.high >= lo)


def _differs(F: Any, schema: pa.Schema, key: str) -> Any:
    cond = None
    for f in schema:
        if f.name == key:
            continue
        same = F.col(f"s.{f.name}").eqNullSafe(F.col(f"t.{f.name}"))
        cond = ~same if cond is None else (cond | ~same)
    return cond if cond is not None else F.lit(False)


def merge_by_ind(
    engine: SparkEngine,
    lake: Lake,
    ref: LakeRef,
    parts: Sequence[str],
    schema: pa.Schema,
    batch: Any,
    firsts: Any,
    app_txns: Mapping[str, int] | None,
    bounds: tuple[int, int | None, int | None] | None = None,
) -> MergeCounts:
    """Upsert ``batch`` (a DataFrame of ``schema`` rows, one per ``ind``) into the table at ``parts`` (see the
    module docstring); ``firsts`` (same schema) are the rows to compare with the table for conflicts;
    ``bounds`` = (rows, lowest ``ind``, highest ``ind``) of ``batch`` if the caller knows them. The table
    must be :func:`supported`. Commits nothing if nothing changed and there are no ``app_txns``."""
    F = engine.F
    dt = open_table(lake, *parts)
    if bounds is None:
        row = batch.agg(F.count(F.lit(1)).alias("n"), F.min("ind").alias("lo"), F.max("ind").alias("hi")).collect()[0]
        bounds = int(row["n"]), row["lo"], row["hi"]
    size, lo, hi = bounds
    if dt is None:
        created = write_files(engine, ref, parts, batch, schema, size, "ind") if size else []
        commit_files(lake, parts, schema, created, app_txns=app_txns)
        return MergeCounts(size, 0, 0, 0)
    files = table_files(dt)
    candidates = [] if lo is None or hi is None else [f for f in files if _overlaps(f, lo, hi)]
    s = batch.select(*schema.names, F.lit(True).alias("_s")).alias("s")
    if candidates:
        t = read_files(engine, ref, parts, candidates, schema, with_file=True).alias("t")
        joined = s.join(t, F.col("s.ind") == F.col("t.ind"), "full_outer")
        status = (
            F.when(F.col("s._s").isNull(), F.lit("keep"))
            .when(F.col("t._file").isNull(), F.lit("insert"))
            .when(_differs(F, schema, "ind"), F.lit("update"))
            .otherwise(F.lit("same"))
        )
        rows = joined.select(
            *(
                F.when(F.col("s._s").isNotNull(), F.col(f"s.{n}")).otherwise(F.col(f"t.{n}")).alias(n)
                for n in schema.names
            ),
            F.col("t._file").alias("_file"),
            status.alias("_status"),
        ).persist()
        first_rows = firsts.alias("s").join(t, F.col("s.ind") == F.col("t.ind"), "inner")
        changed_firsts = first_rows.filter(_differs(F, schema, "ind")).count()
    else:
        rows = s.select(*schema.names, F.lit(None).cast("string").alias("_file"), F.lit("insert").alias("_status"))
        rows = rows.persist()
        changed_firsts = 0
    try:
        counts: dict[str, int] = {}
        touched: set[str] = set()
        for r in rows.groupBy("_status", "_file").agg(F.count(F.lit(1)).alias("n")).collect():  # per file: metadata
            counts[r["_status"]] = counts.get(r["_status"], 0) + int(r["n"])
            if r["_status"] == "update":
                touched.add(r["_file"])
        inserted, updated = counts.get("insert", 0), counts.get("update", 0)
        removed = [f for f in files if f.path in touched]
        added: list[WrittenFile] = []
        if inserted or updated:
            out = rows.filter(F.col("_file").isNull() | F.col("_file").isin(sorted(touched))).select(*schema.names)
            estimate = inserted + sum(f.num_records for f in removed)
            added = write_files(engine, ref, parts, out, schema, estimate, "ind")
        if added or removed or app_txns:
            commit_files(lake, parts, schema, added, removed, app_txns, dt)
    finally:
        rows.unpersist()
    return MergeCounts(inserted, updated, counts.get("same", 0), int(changed_firsts))


def insert_absent(
    engine: SparkEngine,
    lake: Lake,
    ref: LakeRef,
    parts: Sequence[str],
    schema: pa.Schema,
    rows: Any,
    key: Sequence[str],
    offsets: tuple[int, int] | None = None,
) -> int:
    """Insert the rows of ``rows`` (``schema``) whose ``key`` the table at ``parts`` does not hold yet, in files
    written by executors; the number inserted. ``offsets`` (lowest, highest), when the caller knows the range of
    the rows' ``offset`` column, limits the files read to those whose statistics overlap it. Commits nothing
    when there is nothing new."""
    rows = rows.dropDuplicates(list(key))
    dt = open_table(lake, *parts)
    if dt is not None:
        files = table_files(dt, key="offset")
        if offsets is not None:
            files = [f for f in files if _overlaps(f, *offsets)]
        if files:
            key_schema = pa.schema([schema.field(k) for k in key])
            existing = read_files(engine, ref, parts, files, key_schema)
            rows = rows.join(existing, list(key), "left_anti")
    # executors write what is new (an empty partition writes no file); the files' row counts are the count
    added = write_files(engine, ref, parts, rows.select(*schema.names), schema, 0, None)
    if added:
        commit_files(lake, parts, schema, added, dt=dt)
    return sum(f.num_records for f in added)
