"""Stage 1 of cleaning on Spark executors: each task fetches its share of the landed objects and parses them.

The driver builds a small DataFrame of object keys (:data:`KEYS_SCHEMA`: one row per object, with the first
offset still to take) and runs :func:`read_landed_task` over it with ``mapInArrow``: the task reads each object
through the lake's object store, cuts it into records (:func:`~pinpipe.clean.records.records_from_object`) and
runs stage 1 (:func:`~pinpipe.clean.parse.parse_records`, on a DuckDB connection of its own). Out comes one row
per record (:func:`stage1_schema`): the typed raw columns of a good record, or the quarantine reason of a bad one,
and always its line (without the ``\\n`` terminator, as quarantine keeps it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.engine.spark_io import ArrowTask, LakeRef
from pinpipe.tables import Kind

KEYS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("start", pa.int64(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
    ]
)
"""The driver's list of work: a landed object, its topic-partition and start offset, and the first offset of it
still to process (the committed position)."""


def stage1_schema(kind: Kind) -> pa.Schema:
    """:func:`~pinpipe.clean.parse.raw_schema` ``(kind)`` plus ``_reason`` (null for a good record) and ``_line``."""
    from pinpipe.clean.parse import raw_schema

    return pa.schema([*raw_schema(kind), pa.field("_reason", pa.string()), pa.field("_line", pa.string())])


def read_landed_task(ref: LakeRef, kind: Kind) -> ArrowTask:
    """The ``mapInArrow`` function over :data:`KEYS_SCHEMA` rows (see the module docstring). An object listed
    by the driver and gone when the task reads it yields nothing (a rewrite in progress: the next run takes it;
    its topic-partition's progress is not advanced beyond what was read, see the batch job)."""

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import duckdb

        from pinpipe.clean.parse import parse_records
        from pinpipe.clean.records import records_from_object, take_rows

        schema = stage1_schema(kind)
        lake = ref.open()
        conn = duckdb.connect()
        conn.execute("SET threads = 1")  # one task, one core: Spark runs the others
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    data = lake.get(row["key"])
                    if data is None:
                        continue
                    records = records_from_object(
                        row["topic"], row["partition"], row["start"], row["key"], data, min_offset=row["position"]
                    )
                    if records.num_rows == 0:
                        continue
                    parsed = parse_records(kind, records, conn)
                    good = parsed.rows
                    lines = take_rows(records, good.column("_row")).column("line")
                    good = good.append_column("_reason", pa.nulls(good.num_rows, pa.string()))
                    good = good.append_column("_line", _strip(lines))
                    yield from good.cast(schema).to_batches()
                    bad = parsed.quarantine
                    if bad.num_rows:
                        yield from _bad_rows(bad, schema).to_batches()
        finally:
            conn.close()

    return task


def _strip(lines: pa.ChunkedArray) -> pa.Array:
    stripped = pc.replace_substring_regex(lines, pattern="\n$", replacement="")
    return stripped.cast(pa.string()).combine_chunks()


def _bad_rows(bad: pa.Table, schema: pa.Schema) -> pa.Table:
    """Stage-1 quarantine rows (``QUARANTINE_SCHEMA``) as :func:`stage1_schema` rows (raw columns null)."""
    n = bad.num_rows
    columns = []
    for f in schema:
        if f.name == "_row":
            columns.append(bad.column("offset").cast(pa.int64()))
        elif f.name in ("topic", "partition", "offset", "source"):
            columns.append(bad.column(f.name).cast(f.type))
        elif f.name == "_reason":
            columns.append(bad.column("reason").cast(pa.string()))
        elif f.name == "_line":
            columns.append(_strip(bad.column("raw")))
        else:
            columns.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(columns, schema=schema)
