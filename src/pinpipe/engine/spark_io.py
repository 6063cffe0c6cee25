"""What Spark executors run to reach the lake: reading landed objects and Delta data files, writing Parquet files.

Spark's own S3 connector (hadoop-aws) and Delta's Spark jars are not needed: executor tasks open the lake through
the same object-store library as the rest of pinpipe (:class:`~pinpipe.lake.store.Lake`, obstore) inside
``mapInArrow``, so a task reads its share of the objects and writes its own Parquet files, and only metadata
(object keys, file paths and statistics) passes through the driver. The driver then commits the files to the
Delta log with delta-rs (:func:`commit_files`): add/remove actions with file statistics and the application
transactions in one commit, under delta-rs's optimistic concurrency check.

Every function here that takes a :class:`LakeRef` returns a ``mapInArrow`` function (a closure over plain,
picklable values); pinpipe and its dependencies must be importable by the executors' Python.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinpipe.config import LakeSettings
from pinpipe.lake.delta import delta_errors
from pinpipe.lake.store import Lake, open_lake
from pinpipe.tables import SILVER_BUCKET

ArrowTask = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
"""A ``mapInArrow`` function: the record batches of one partition in, record batches out."""

FILES_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("num_records", pa.int64(), nullable=False),
        pa.field("stats", pa.string(), nullable=False),
    ]
)
"""What :func:`write_parquet_task` returns per file written: its path relative to the table, its size, its
row count and its Delta statistics (JSON)."""


@dataclass(frozen=True)
class LakeRef:
    """How an executor opens the lake: its URL and settings (credentials travel with the task, as Spark's own
    connectors' do in the job's configuration)."""

    url: str
    settings: LakeSettings

    @classmethod
    def of(cls, lake: Lake) -> LakeRef:
        """The reference to ``lake`` (its S3 endpoint, region and keys as the lake holds them)."""
        options = lake.storage_options
        settings: dict[str, Any] = {"url": lake.url}
        for name, option in (
            ("region", "AWS_REGION"),
            ("endpoint", "AWS_ENDPOINT_URL"),
            ("access_key_id", "AWS_ACCESS_KEY_ID"),
            ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            ("session_token", "AWS_SESSION_TOKEN"),
        ):
            if options.get(option):
                settings[name] = options[option]
        return cls(lake.url, LakeSettings.model_validate(settings))

    def open(self) -> Lake:
        return open_lake(self.url, self.settings)


def table_prefix(*parts: str) -> str:
    """The key prefix of a table's files in the lake (``silver``, ``pin`` → ``silver/pin/``)."""
    return "/".join(parts) + "/"


# ---------------------------------------------------------------------------------------------- reading


def read_parquet_task(ref: LakeRef, prefix: str, schema: pa.Schema, with_file: bool) -> ArrowTask:
    """Read the Delta data files named in the ``path`` column of the input (relative to the table at
    ``prefix``), cast to ``schema`` (its columns only), plus a ``_file`` column (the path) if ``with_file``."""

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        lake = ref.open()
        for batch in batches:
            for path in batch.column("path").to_pylist():
                data = lake.get(prefix + path)
                if data is None:
                    raise FileNotFoundError(f"Delta data file {prefix}{path} is missing from {ref.url}")
                table = pq.read_table(io.BytesIO(data), columns=schema.names)
                table = cast_to(table, schema)
                if with_file:
                    table = table.append_column("_file", pa.repeat(pa.scalar(path, pa.string()), table.num_rows))
                yield from table.to_batches(max_chunksize=65_536)

    return task


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


# ---------------------------------------------------------------------------------------------- writing


def write_parquet_task(ref: LakeRef, prefix: str, schema: pa.Schema) -> ArrowTask:
    """Write all the rows of a partition (cast to ``schema``) as one Parquet file under the table at ``prefix``
    and return one :data:`FILES_SCHEMA` row for it (none for an empty partition). The file is complete in the
    store before its row is returned; until the driver commits it, Delta readers do not see it."""

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [b for b in batches if b.num_rows]
        if not parts:
            return
        table = cast_to(pa.Table.from_batches(parts), schema)
        del parts
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="snappy")
        data = sink.getvalue().to_pybytes()
        path = f"part-{uuid.uuid4()}-c000.snappy.parquet"
        ref.open().put(prefix + path, data)
        row = {"path": [path], "size": [len(data)], "num_records": [table.num_rows], "stats": [file_stats(table)]}
        yield pa.RecordBatch.from_pydict(row, schema=FILES_SCHEMA)

    return task


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


# ---------------------------------------------------------------------------------------------- committing


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


def commit_files(
    lake: Lake,
    parts: Sequence[str],
    schema: pa.Schema,
    added: Sequence[WrittenFile],
    removed: Sequence[TableFile] = (),
    app_txns: Mapping[str, int] | None = None,
    dt: Any = None,
) -> None:
    """Commit ``added`` (and remove ``removed``) in one Delta commit on the table at ``parts`` with the
    application transactions ``app_txns``; ``dt`` is the snapshot the removals were decided on (delta-rs
    rejects the commit if another writer removed one of those files since: a lost race). Creates the table
    (``schema``) when ``dt`` is None."""
    from deltalake import CommitProperties, Schema, Transaction
    from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

    now = int(time.time() * 1000)
    adds = [AddAction(f.path, f.size, _partition(f.bucket), now, True, f.stats) for f in added]
    txns = [Transaction(app_id=app, version=int(v)) for app, v in sorted((app_txns or {}).items())]
    props = CommitProperties(app_transactions=txns or None)
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
        actions: list[Any] = [RemoveAction(f.path, True, now, f.size, _partition(f.bucket)) for f in removed]
        dt.create_write_transaction(
            [*actions, *adds],
            mode="append",
            schema=dt.schema(),
            partition_by=list(dt.metadata().partition_columns) or None,
            commit_properties=props,
        )


def table_files(dt: Any, key: str = "ind") -> list[TableFile]:
    """The data files of ``dt``'s snapshot (metadata only), with the range of their ``key`` column."""
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
