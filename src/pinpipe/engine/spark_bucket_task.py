"""What one Spark executor task does to merge whole silver buckets: the copy-on-write upsert of a bucketed table.

:func:`bucket_merge_task` is the ``mapInArrow`` function :func:`pinpipe.engine.spark_buckets.merge_buckets`
runs over the batch repartitioned by bucket, so each task holds every row of the buckets it sees. For each of them
the task

1. reads only the existing files of that bucket (from the driver's file list, metadata only) whose ``ind``
   statistics can hold one of the bucket's keys (an exact test: some key lies in the file's ``[min, max]``);
2. matches the batch's rows to the rows read, by ``ind``: a new ``ind`` is an insert, one held with other content
   (null-safe, NaN equal to NaN, as Spark's ``<=>`` and DuckDB's ``IS DISTINCT FROM``) an update, the rest are
   unchanged;
3. rewrites every file holding an updated row whole (its other rows kept) and writes the inserts, sorted by
   ``ind``, as new Parquet files under ``bucket=N/`` (the bucket is the files' partition value, not a column in
   them, as delta-rs writes a partitioned table).

Out come :data:`RESULT_SCHEMA` rows: one per file added or to remove, and one with the bucket's counts. The files
are complete in the store before their rows are returned; the driver commits them.
"""

from __future__ import annotations

import bisect
import io
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinpipe.engine.spark_io import ArrowTask, LakeRef, TableFile, cast_to, file_stats
from pinpipe.lake.store import Lake
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
            out = merge_bucket(lake, prefix, schema, int(bucket), mine, files.get(int(bucket), ()), rows_per_file)
            yield pa.RecordBatch.from_pylist(out, schema=RESULT_SCHEMA)

    return task


def merge_bucket(
    lake: Lake,
    prefix: str,
    schema: pa.Schema,
    bucket: int,
    rows: pa.Table,
    files: Sequence[TableFile],
    rows_per_file: int,
) -> list[dict[str, Any]]:
    """Merge one bucket's batch ``rows`` into its ``files``; the :data:`RESULT_SCHEMA` rows (as dicts)."""
    role = rows.column(ROLE)
    winners = cast_to(rows.filter(pc.equal(role, 0)), schema)
    firsts = cast_to(rows.filter(pc.equal(role, 1)), schema)
    keys = sorted(winners.column("ind").to_pylist())
    candidates = [f for f in files if _may_hold(f, keys)]
    existing, file_of = _read(lake, prefix, schema, candidates)
    where = pc.index_in(winners.column("ind"), value_set=existing.column("ind"))
    matched = pc.is_valid(where)
    differs = _differs(winners, existing.take(where), schema)
    update = pc.and_(matched, differs)
    insert = pc.invert(matched)
    inserted, updated = _count(insert), _count(update)
    out: list[dict[str, Any]] = []
    touched = sorted(set(pc.take(file_of, pc.filter(where, update)).to_pylist())) if updated else []
    if inserted or updated:
        changed = winners.filter(pc.or_(insert, update))
        kept = existing.filter(pc.is_in(file_of, pa.array(touched, pa.string())))
        kept = kept.filter(pc.invert(pc.is_in(kept.column("ind"), value_set=changed.column("ind"))))
        written = pa.concat_tables([kept, changed]).sort_by("ind")
        for start in range(0, written.num_rows, rows_per_file):
            out.append(_write(lake, prefix, bucket, written.slice(start, rows_per_file)))
        out.extend({"op": "remove", "bucket": bucket, "path": path} for path in touched)
    out.append(
        {
            "op": "counts",
            "bucket": bucket,
            "inserted": inserted,
            "updated": updated,
            "unchanged": winners.num_rows - inserted - updated,
            "changed_firsts": _changed_firsts(winners, firsts, existing, schema),
            "files_read": len(candidates),
        }
    )
    return out


def _may_hold(f: TableFile, keys: Sequence[int]) -> bool:
    """True if some of the sorted ``keys`` lies in ``f``'s ``ind`` range (a file without statistics may hold any)."""
    if f.low is None or f.high is None:
        return True
    i = bisect.bisect_left(keys, f.low)
    return i < len(keys) and keys[i] <= f.high


def _read(lake: Lake, prefix: str, schema: pa.Schema, files: Sequence[TableFile]) -> tuple[pa.Table, pa.Array]:
    """The rows of ``files`` (``schema``) and, per row, the path of the file holding it."""
    tables: list[pa.Table] = [schema.empty_table()]
    paths: list[pa.Array] = [pa.array([], pa.string())]
    for f in files:
        data = lake.get(prefix + f.path)
        if data is None:
            raise FileNotFoundError(f"Delta data file {prefix}{f.path} is missing from {lake.url}")
        table = cast_to(pq.read_table(io.BytesIO(data), columns=schema.names), schema)
        tables.append(table)
        paths.append(pa.array([f.path] * table.num_rows, pa.string()))
    return pa.concat_tables(tables), pa.concat_arrays(paths)


def _same(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array, kind: pa.DataType) -> pa.Array:
    """Null-safe equality of two columns, NaN equal to NaN."""
    if pa.types.is_nested(kind):
        same = [_equal(x, y) for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)]
        return pa.array(same, pa.bool_())
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    out = pc.or_(pc.fill_null(pc.equal(a, b), False), both_null)
    if pa.types.is_floating(kind):
        out = pc.or_(out, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return out


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_equal(p, q) for p, q in zip(x, y, strict=True))
    return bool(x == y)


def _differs(source: pa.Table, target: pa.Table, schema: pa.Schema) -> pa.Array:
    """Per row: some column other than ``ind`` differs between ``source`` and ``target`` (aligned rows)."""
    out = pa.array([False] * source.num_rows, pa.bool_())
    for f in schema:
        if f.name != "ind":
            out = pc.or_(out, pc.invert(_same(source.column(f.name), target.column(f.name), f.type)))
    return out


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _changed_firsts(winners: pa.Table, firsts: pa.Table, existing: pa.Table, schema: pa.Schema) -> int:
    """How many ``ind`` silver held before with content other than their first record in the run (the winner
    when the ``ind`` came once)."""
    alone = winners.filter(pc.invert(pc.is_in(winners.column("ind"), value_set=firsts.column("ind"))))
    compared = pa.concat_tables([alone, firsts])
    where = pc.index_in(compared.column("ind"), value_set=existing.column("ind"))
    return _count(pc.and_(pc.is_valid(where), _differs(compared, existing.take(where), schema)))


def _write(lake: Lake, prefix: str, bucket: int, table: pa.Table) -> dict[str, Any]:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    data = sink.getvalue().to_pybytes()
    path = f"{SILVER_BUCKET}={bucket}/part-{uuid.uuid4()}-c000.snappy.parquet"
    lake.put(prefix + path, data)
    return {
        "op": "add",
        "bucket": bucket,
        "path": path,
        "size": len(data),
        "num_records": table.num_rows,
        "stats": file_stats(table),
    }
