"""What Spark executors run to reach the lake: reading landed objects and Delta data files, writing Parquet files.

Spark's own S3 connector (hadoop-aws) and Delta's Spark jars are not needed: executor tasks open the lake through
the same object-store library as the rest of pinpipe (:class:`~pinpipe.lake.store.Lake`, obstore) inside
``mapInArrow``, so a task reads its share of the objects and writes its own Parquet files, and only metadata
(object keys, file paths and statistics) passes through the driver. The driver then commits the files to the
Delta log with delta-rs (:func:`pinpipe.lake.data_files.commit_files`): add/remove actions with file statistics and the application
transactions in one commit, under delta-rs's optimistic concurrency check.

Every function here that takes a :class:`LakeRef` returns a ``mapInArrow`` function (a closure over plain,
picklable values); pinpipe and its dependencies must be importable by the executors' Python.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pinpipe.config import LakeSettings
from pinpipe.lake.data_files import cast_to, write_file
from pinpipe.lake.store import Lake, open_lake

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
        f = write_file(ref.open(), prefix, None, table)
        row = {"path": [f.path], "size": [f.size], "num_records": [f.num_records], "stats": [f.stats]}
        yield pa.RecordBatch.from_pydict(row, schema=FILES_SCHEMA)

    return task
