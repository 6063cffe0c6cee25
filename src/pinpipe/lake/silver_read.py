"""Reading silver and other Delta tables of the lake: whole tables as Arrow, silver as a lazy dataset, and the
silver files a batch's keys can touch.

Who calls what: the batch job and the checks read through :mod:`pinpipe.lake.delta`, which re-exports these
(``delta.read_table``, ``delta.silver_dataset``, ``delta.count_changed``, ``delta.silver_files``); gold's
rebuild scans :func:`silver_dataset` with DuckDB instead of holding a copy of the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake import DeltaTable

from pinpipe.lake.open_tables import buckets_of, delta_errors, open_table
from pinpipe.lake.pruning import key_predicate
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_SCHEMAS, Kind, silver_table_schema

if TYPE_CHECKING:
    import duckdb
    import pyarrow.dataset
else:  # pyarrow.dataset imports pandas: only when a read needs it
    from pinpipe.lazy_import import LazyPackage

    pyarrow = LazyPackage("pyarrow")


def read_table(lake: Lake, *parts: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The whole table at ``parts`` as Arrow (``read_table(lake, "silver", "pin")``), or only ``columns`` of it;
    None if there is no table. A silver table reads as its SPEC columns (``SILVER_SCHEMAS[kind]``) unless
    ``columns`` asks for more: the bucket column is layout, not content."""
    dt = open_table(lake, *parts)
    if dt is None:
        return None
    if columns is None and len(parts) == 2 and parts[0] == "silver" and parts[1] in SILVER_SCHEMAS:
        columns = SILVER_SCHEMAS[parts[1]].names
    with delta_errors("reading", dt.table_uri):
        schema = pa.schema(dt.schema().to_arrow())
        wanted = list(schema.names if columns is None else columns)
        uris = list(dt.file_uris())
        if all("://" not in u for u in uris) and not set(wanted) & set(dt.metadata().partition_columns):
            # Arrow's own reader on file://: delta-rs's Arrow filesystem leaves threads that abort at exit (#2184)
            files = pa.schema([f for f in schema if f.name in wanted])
            return pyarrow.dataset.dataset(uris, schema=files, format="parquet").to_table(columns=wanted)
        return dt.to_pyarrow_table(columns=wanted)


def silver_dataset(lake: Lake, kind: Kind) -> pa.dataset.Dataset | None:
    """The SPEC columns of ``<lake>/silver/<kind>`` as a lazy Arrow dataset over its data files (scanned on demand
    with projection and filter pushdown: DuckDB streams it instead of holding a copy of the table), None if there
    is no table."""
    dt = open_table(lake, "silver", kind)
    return None if dt is None else _files_dataset(dt, kind, None)


def _files_dataset(dt: DeltaTable, kind: Kind, predicate: str | None) -> pa.dataset.Dataset:
    """The data files of ``dt`` that ``predicate`` keeps, as a dataset of the SPEC columns: read by Arrow's own
    local reader on a ``file://`` lake (the bucket lives in the path, not in the files), through delta-rs's
    object store otherwise."""
    with delta_errors("reading", dt.table_uri):
        uris = list(dt.file_uris(file_pruning_predicate=predicate))
        if all("://" not in uri for uri in uris):
            return pyarrow.dataset.dataset(uris, schema=SILVER_SCHEMAS[kind], format="parquet")
        return dt.to_pyarrow_dataset(file_pruning_predicate=predicate, schema=silver_table_schema(kind))


def count_changed(lake: Lake, kind: Kind, rows: pa.Table, conn: duckdb.DuckDBPyConnection) -> int:
    """How many of ``rows`` (``SILVER_SCHEMAS[kind]``) have an ``ind`` that ``<lake>/silver/<kind>`` holds with
    different content (null-safe, every SPEC column). The batch job calls it before merging for the ``ind`` s that
    repeat in a run (their first records and their winners); the MERGE's metrics count the others.
    ``conn`` is a DuckDB connection of the caller's thread (``engine.duckdb()``). Reads only the files whose
    bucket and ``ind`` statistics can hold one of ``rows`` (:func:`silver_files`), never the whole table."""
    dt = open_table(lake, "silver", kind)
    if dt is None or rows.num_rows == 0:
        return 0
    schema = SILVER_SCHEMAS[kind]
    differs = " OR ".join(f'(s."{f.name}" IS DISTINCT FROM t."{f.name}")' for f in schema if f.name != "ind")
    inds = rows.column("ind").to_pylist()
    silver = _files_dataset(dt, kind, key_predicate(inds, buckets_of(dt)))
    conn.register("__pinpipe_silver", silver)
    conn.register("__pinpipe_rows", rows.select(schema.names).cast(schema))
    try:
        sql = f"SELECT count(*) FROM __pinpipe_rows s JOIN __pinpipe_silver t ON s.ind = t.ind WHERE {differs}"
        found = conn.sql(sql).fetchall()
    finally:
        conn.unregister("__pinpipe_rows")
        conn.unregister("__pinpipe_silver")
    return int(found[0][0])


def silver_files(lake: Lake, kind: Kind, inds: Iterable[int]) -> list[str] | None:
    """The data files of ``silver/<kind>`` a merge of ``inds`` may read (by bucket and statistics); None if there is
    no table. What :func:`merge_silver` and :func:`count_changed` prune to."""
    dt = open_table(lake, "silver", kind)
    if dt is None:
        return None
    with delta_errors("listing silver files", dt.table_uri):
        return list(dt.file_uris(file_pruning_predicate=key_predicate(list(inds), buckets_of(dt))))
