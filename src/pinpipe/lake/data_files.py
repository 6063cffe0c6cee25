"""Delta data files written by pinpipe itself (not by delta-rs's writer): their statistics, the table's current
files as metadata, and the commit of added and removed files with application transactions.

Who calls what: the copy-on-write silver merge (:mod:`pinpipe.lake.bucket_merge`), run by the stream worker and the
DuckDB batch on the driver and by Spark executors (:mod:`pinpipe.engine.spark_bucket_task`), writes Parquet files
with pyarrow and describes them as :class:`WrittenFile`; the writer then commits them with :func:`commit_files`
through delta-rs's transaction API (add/remove actions with :func:`file_stats` statistics), under delta-rs's
optimistic concurrency check (a stream worker's kept handles commit through their
:class:`~pinpipe.lake.log_head.LogHead` instead, which writes the same actions itself). :func:`write_file` writes
one such file (the Spark executors' plain Parquet task too) and :func:`open_data_file` opens one for reading. :func:`table_files` lists a snapshot's files (paths, sizes,
``ind`` ranges, buckets) from the log alone.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinpipe.errors import CommitConflictError
from pinpipe.lake.open_tables import delta_errors
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_BUCKET


def table_prefix(*parts: str) -> str:
    """The key prefix of a table's files in the lake (``silver``, ``pin`` → ``silver/pin/``)."""
    return "/".join(parts) + "/"


def cast_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns of ``schema`` cast to it (list field names, timestamp zones and widths differ
    between Spark, pyarrow and delta-rs)."""
    columns = []
    for f in schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC")
        columns.append(col.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _stat_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return value


def file_stats(table: pa.Table) -> str:
    """Delta file statistics: ``numRecords``, ``nullCount`` of the top-level primitive columns and
    ``minValues``/``maxValues`` of the integer, floating-point and timestamp ones (strings have none: a
    truncated string bound would not be a bound)."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for f in table.schema:
        if pa.types.is_nested(f.type):
            continue
        col = table.column(f.name)
        nulls[f.name] = int(col.null_count)
        ranged = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_timestamp(f.type)
        if ranged and col.null_count < len(col):
            low, high = pc.min_max(col)["min"].as_py(), pc.min_max(col)["max"].as_py()
            if pa.types.is_timestamp(f.type):  # Delta keeps milliseconds: round outwards, bounds stay bounds
                low = pc.floor_temporal(pa.scalar(low, f.type), unit="millisecond").as_py()
                high = pc.ceil_temporal(pa.scalar(high, f.type), unit="millisecond").as_py()
            if isinstance(low, float) and (low != low or high != high):
                continue  # NaN has no place in a range
            mins[f.name], maxs[f.name] = _stat_value(low), _stat_value(high)
    stats = {"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return orjson.dumps(stats).decode()


@dataclass(frozen=True)
class WrittenFile:
    """A Parquet file an executor wrote into a table's directory (a :data:`FILES_SCHEMA` row)."""

    path: str
    size: int
    num_records: int
    stats: str
    bucket: int | None = None
    """The file's silver bucket (its partition value), None in a table without partition columns."""

    @classmethod
    def rows(cls, table: pa.Table) -> list[WrittenFile]:
        return [cls(**row) for row in table.to_pylist()]


@dataclass(frozen=True)
class TableFile:
    """A data file of a table's current snapshot: path, size, rows, the range of its key column (``ind`` unless
    :func:`table_files` was asked for another; None: unknown) and its silver bucket (None: not partitioned)."""

    path: str
    size: int
    num_records: int
    low: int | None
    high: int | None
    bucket: int | None = None


def _partition(bucket: int | None) -> dict[str, str | None]:
    return {} if bucket is None else {SILVER_BUCKET: str(bucket)}


ROWS_INSERTED = "pinpipe.rows_inserted"
ROWS_UPDATED = "pinpipe.rows_updated"
OPERATION = "pinpipe.operation"
"""``commitInfo`` keys pinpipe's own commits carry: rows inserted and updated (a merge), and the operation when it
is not the ``WRITE`` delta-rs records (``OPTIMIZE`` for compaction)."""


def commit_operation(info: Mapping[str, Any]) -> str:
    """A commit's operation from its ``commitInfo`` (or a history entry): pinpipe's own commits say theirs in
    :data:`OPERATION` (compaction's ``OPTIMIZE`` is a delta-rs ``WRITE`` of the same rows), others in
    ``operation``."""
    return str(info.get(OPERATION) or info.get("operation", ""))


def row_metadata(inserted: int, updated: int) -> dict[str, str]:
    """The ``commitInfo`` entries of a merge that inserted and updated these rows."""
    return {ROWS_INSERTED: str(int(inserted)), ROWS_UPDATED: str(int(updated))}


def commit_files(
    lake: Lake,
    parts: Sequence[str],
    schema: pa.Schema,
    added: Sequence[WrittenFile],
    removed: Sequence[TableFile] = (),
    app_txns: Mapping[str, int] | None = None,
    dt: Any = None,
    *,
    data_change: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Commit ``added`` (and remove ``removed``) in one Delta commit on the table at ``parts`` with the
    application transactions ``app_txns``; ``dt`` is the snapshot the removals were decided on (delta-rs
    rejects the commit if another writer removed one of those files since: a lost race). Creates the table
    (``schema``) when ``dt`` is None. ``data_change=False`` marks a rewrite of the same rows (compaction).
    ``metadata`` goes into the commit's ``commitInfo`` (:func:`row_metadata`, :data:`OPERATION`): delta-rs writes
    no operation metrics for such a commit, and the report's history reads them from there."""
    from deltalake import CommitProperties, Schema, Transaction
    from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

    now = int(time.time() * 1000)
    adds = [AddAction(f.path, f.size, _partition(f.bucket), now, data_change, f.stats) for f in added]
    txns = [Transaction(app_id=app, version=int(v)) for app, v in sorted((app_txns or {}).items())]
    props = CommitProperties(app_transactions=txns or None, custom_metadata=dict(metadata or {}) or None)
    uri = lake.table_uri(*parts)
    with delta_errors("committing executor-written files", uri):
        if dt is None:
            create_table_with_add_actions(
                uri,
                Schema.from_arrow(schema),
                adds,
                mode="append",
                storage_options=lake.storage_options or None,
                commit_properties=props,
            )
            return
        actions: list[Any] = [RemoveAction(f.path, data_change, now, f.size, _partition(f.bucket)) for f in removed]
        dt.create_write_transaction(
            [*actions, *adds],
            mode="append",
            schema=dt.schema(),
            partition_by=list(dt.metadata().partition_columns) or None,
            commit_properties=props,
        )


_KNOWN_LOCK = threading.Lock()
_KNOWN: dict[int, tuple[weakref.ref[Any], int, tuple[TableFile, ...]]] = {}
"""Per open table object (by ``id``, checked through a weak reference): the ``ind`` files of one version of it —
a snapshot's files never change, so a kept handle whose own commit produced that version need not list them."""


def table_files(dt: Any, key: str = "ind") -> list[TableFile]:
    """The data files of ``dt``'s snapshot (metadata only), with the range of their ``key`` column."""
    version = int(dt.version())
    known = _KNOWN.get(id(dt))
    if key == "ind" and known is not None and known[0]() is dt and known[1] == version:
        return list(known[2])
    out = _list_files(dt, key)
    if key == "ind":
        remember_files(dt, version, out)
    return out


def remember_files(dt: Any, version: int, files: Sequence[TableFile]) -> None:
    """Note that version ``version`` of the table object ``dt`` has exactly ``files`` (the ``ind`` ranges): what
    a writer that just committed on top of a snapshot it listed knows without listing again."""
    with _KNOWN_LOCK:  # writers of different tables run on threads of one process
        for ident in [i for i, (ref, _, _) in _KNOWN.items() if ref() is None]:
            del _KNOWN[ident]
        _KNOWN[id(dt)] = (weakref.ref(dt), version, tuple(files))


def written_table_file(f: WrittenFile) -> TableFile:
    """The :class:`TableFile` a committed :class:`WrittenFile` becomes (its ``ind`` range from its statistics)."""
    stats = orjson.loads(f.stats)
    return TableFile(
        f.path, f.size, f.num_records, stats["minValues"].get("ind"), stats["maxValues"].get("ind"), f.bucket
    )


def _list_files(dt: Any, key: str) -> list[TableFile]:
    actions = pa.table(dt.get_add_actions(flatten=True))
    names = actions.schema.names
    wanted = ("path", "size_bytes", "num_records", f"min.{key}", f"max.{key}", f"partition.{SILVER_BUCKET}")
    rows = actions.select([n for n in wanted if n in names])
    out: list[TableFile] = []
    for row in rows.to_pylist():
        bucket = row.get(f"partition.{SILVER_BUCKET}")
        out.append(
            TableFile(
                row["path"],
                int(row["size_bytes"]),
                int(row.get("num_records") or 0),
                row.get(f"min.{key}"),
                row.get(f"max.{key}"),
                None if bucket is None else int(bucket),
            )
        )
    return out


def check_unchanged(
    dt: Any,
    planned: Sequence[TableFile],
    removed: Sequence[str],
    buckets: set[int | None],
    keys: Mapping[int, np.ndarray[Any, Any]] | None = None,
) -> None:
    """Bring ``dt`` to the table's latest version and raise :class:`CommitConflictError` if, since the snapshot
    whose files were ``planned``, another writer removed one of the files this commit ``removed`` (compaction
    included) or added a file that may hold an ``ind`` this commit also writes (delta-rs's own check does not see
    a plain append): with ``keys`` (the commit's sorted keys by bucket), a file whose statistics can hold one of
    its bucket's keys; without, any file in one of ``buckets``. Nothing to do when no commit came in between; else
    the caller commits on the latest version. What a commit landing between this check and the caller's commit
    can still do: delta-rs rejects one that removed the same files, not one that appended to the same bucket.
    (A log head's commit has its own check: :meth:`pinpipe.lake.log_head.LogHead.check_unchanged`.)"""
    before = int(dt.version())
    if not catch_up(dt):
        return
    now = {f.path: f for f in table_files(dt)}
    known = {f.path for f in planned}
    gone = [path for path in removed if path not in now]
    fresh = [f for f in now.values() if f.path not in known]
    if keys is None:
        new = [f for f in fresh if f.bucket in buckets]
    else:
        new = [f for f in fresh if f.bucket is not None and f.bucket in keys and may_hold(f, keys[f.bucket])]
    if gone or new:
        raise merge_conflict(len(gone), len(new), before, dt.table_uri)


def merge_conflict(gone: int, new: int, before: int, table: str) -> CommitConflictError:
    """The error of a merge whose files another writer changed since version ``before``: ``gone`` of the files
    it rewrites removed, ``new`` files added that may hold its keys."""
    return CommitConflictError(
        f"another writer changed the silver files this merge rewrites ({gone} removed, {new} added to its buckets) "
        f"since version {before}",
        hint="retry: the next attempt re-plans from the new version",
        table=table,
    )


def newer_version_may_exist(dt: Any) -> bool:
    """False when the log of ``dt``'s table certainly holds no version after the one ``dt`` holds: a local table
    whose next commit file does not exist (one ``stat``, where delta-rs's update lists and replays every commit
    since the last checkpoint, a few milliseconds a stream worker would pay per merge). True otherwise (any other
    store: its listing from the handle's version is what costs)."""
    uri = str(dt.table_uri)
    if not uri.startswith("file://"):
        return True
    log_dir = os.path.join(unquote(uri.removeprefix("file://")), "_delta_log")
    return os.path.exists(os.path.join(log_dir, f"{int(dt.version()) + 1:020d}.json"))


def catch_up(dt: Any) -> bool:
    """Bring ``dt`` to its table's latest version; True if it moved. Skips delta-rs's update when
    :func:`newer_version_may_exist` says there is nothing to read."""
    before = int(dt.version())
    if not newer_version_may_exist(dt):
        return False
    with delta_errors("reading the latest version", dt.table_uri):
        dt.update_incremental()
    return int(dt.version()) != before


def may_hold(f: TableFile, keys: np.ndarray[Any, Any]) -> bool:
    """True if some of the sorted ``keys`` lies in ``f``'s ``ind`` range (a file without statistics may hold any)."""
    return bool(holding([f], keys)[0])


def holding(files: Sequence[TableFile], keys: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """:func:`may_hold` for each of ``files`` at once (a boolean array): one ``searchsorted`` over the files'
    lowest keys, not one per file — a bucket of a large table has hundreds of files and a micro-batch a few keys."""
    unknown = np.fromiter((f.low is None or f.high is None for f in files), bool, len(files))
    lows = np.fromiter((0 if f.low is None else f.low for f in files), np.int64, len(files))
    highs = np.fromiter((0 if f.high is None else f.high for f in files), np.int64, len(files))
    at = np.searchsorted(keys, lows)
    inside = at < len(keys)
    inside[inside] = keys[at[inside]] <= highs[inside]
    out: np.ndarray[Any, Any] = inside | unknown
    return out


def open_data_file(lake: Lake, key: str) -> pq.ParquetFile:
    """A data file for reading its footer and columns: on ``file://`` the file itself (only the columns read come
    off the disk), elsewhere its bytes fetched whole."""
    if lake.scheme == "file":
        path = os.path.join(lake.root, key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Delta data file {key} is missing from {lake.url}")
        return pq.ParquetFile(path)
    data = lake.get(key)
    if data is None:
        raise FileNotFoundError(f"Delta data file {key} is missing from {lake.url}")
    return pq.ParquetFile(io.BytesIO(data))


DICTIONARY_MIN_ROWS = 1_000
"""Files of fewer rows are written without dictionary encoding: a micro-batch writes a few rows per bucket, and
for six pin rows the dictionaries took half of ``write_table``'s time (0.61 → 0.30 ms a file, 16 files per kind
per batch) for no saving; compaction packs such files into full ones, which have their dictionaries."""


def write_file(lake: Lake, prefix: str, bucket: int | None, table: pa.Table) -> WrittenFile:
    """Write ``table`` as one new Snappy Parquet file of the table at ``prefix`` (under ``bucket=N/`` when it has a
    bucket: the partition value lives in the path, not in the file, as delta-rs writes it)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy", use_dictionary=table.num_rows >= DICTIONARY_MIN_ROWS)
    data = sink.getvalue().to_pybytes()
    name = f"part-{uuid.uuid4()}-c000.snappy.parquet"
    path = name if bucket is None else f"{SILVER_BUCKET}={bucket}/{name}"
    lake.put_new(prefix + path, data)
    return WrittenFile(path, len(data), table.num_rows, file_stats(table), bucket)
