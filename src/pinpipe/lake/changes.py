"""What changed in a Delta table between two versions, read from its log: the data files removed and added.

Who calls what: incremental gold (:mod:`pinpipe.batch.gold_state`) pins each silver table at its current version
(``delta.open_table``: the object keeps the version it loaded), asks :func:`file_changes` for the files removed and added since the version its state was
computed at, and reads them (and the files a set of ``ind`` s can live in, :func:`key_files`) with
:func:`read_files`. Whichever writer produced the commits — a batch MERGE, a stream micro-batch, a compaction —
the rows of the removed files are rows of the old version and the rows of the added files rows of the new one;
a row copied unchanged (copy-on-write) appears on both sides.

The answer is exact or absent: :func:`file_changes` returns None when a commit file between the two versions is
missing (log clean-up), a commit changed the table's metadata (schema, partitioning) or used a deletion vector,
and :func:`read_files`
returns None when a data file is gone (vacuum) — the caller then recomputes from the whole table.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from pinpipe.lake.delta import delta_errors
from pinpipe.lake.pruning import key_predicate
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_BUCKET, SILVER_BUCKETS, SILVER_BUCKETS_KEY

if TYPE_CHECKING:
    import pyarrow.dataset
else:  # pyarrow.dataset imports pandas: only when a read needs it
    from pinpipe.lazy_import import LazyPackage

    pyarrow = LazyPackage("pyarrow")


@dataclass(frozen=True)
class FileChanges:
    """Data files (paths relative to the table, as the log spells them, decoded) in the old version and not in
    the new one (``removed``), and the reverse (``added``)."""

    removed: tuple[str, ...]
    added: tuple[str, ...]


def file_changes(lake: Lake, parts: Sequence[str], since: int, until: int) -> FileChanges | None:
    """The files removed and added from version ``since`` to ``until`` of the table at ``parts``, from the
    commit files ``since + 1 .. until`` of its ``_delta_log``; None if one is missing or changes the table's
    metadata. Actions with ``dataChange: false`` (compaction: the same rows in other files) are left out: the
    rows they move are unchanged, and a later commit that removes a compacted file lists the rows it held."""
    if until < since:
        return None
    removed: set[str] = set()
    added: set[str] = set()
    log_dir = "/".join([*parts, "_delta_log"])
    for version in range(since + 1, until + 1):
        data = lake.get(f"{log_dir}/{version:020d}.json")
        if data is None:
            return None
        for line in data.splitlines():
            if not line.strip():
                continue
            action = orjson.loads(line)
            if "metaData" in action or "protocol" in action:
                return None
            for name, into, other in (("add", added, removed), ("remove", removed, added)):
                entry = action.get(name)
                if entry is None or entry.get("dataChange", True) is False:
                    continue
                if entry.get("deletionVector"):
                    return None  # rows removed from a file that stays: not a whole-file change
                path = unquote(entry["path"])
                if path in other:
                    other.discard(path)  # added then removed again (or the reverse) within the range
                else:
                    into.add(path)
    return FileChanges(tuple(sorted(removed)), tuple(sorted(added)))


def _buckets(dt: DeltaTable) -> int | None:
    if SILVER_BUCKET not in {f.name for f in dt.schema().fields}:
        return None
    return int(dt.metadata().configuration.get(SILVER_BUCKETS_KEY) or SILVER_BUCKETS)


def key_files(dt: DeltaTable, inds: Iterable[int]) -> list[str]:
    """The data files of the pinned silver table ``dt`` that can hold a row of ``inds`` (by bucket and ``ind``
    statistics), as paths relative to the table."""
    keys = list(inds)
    if not keys:
        return []
    root = dt.table_uri.rstrip("/") + "/"
    with delta_errors("listing silver files", dt.table_uri):
        uris = dt.file_uris(file_pruning_predicate=key_predicate(keys, _buckets(dt)))
    return [_relative(root, uri) for uri in uris]


def all_files(dt: DeltaTable) -> list[str]:
    """Every data file of the pinned table ``dt``, relative to the table."""
    root = dt.table_uri.rstrip("/") + "/"
    with delta_errors("listing files", dt.table_uri):
        return [_relative(root, uri) for uri in dt.file_uris()]


def _relative(root: str, uri: str) -> str:
    if uri.startswith(root):
        return uri[len(root) :]
    bare = root.split("://", 1)[-1]
    plain = uri.split("://", 1)[-1]
    return plain[len(bare) :] if plain.startswith(bare) else uri


def read_files(lake: Lake, parts: Sequence[str], paths: Sequence[str], schema: pa.Schema) -> pa.Table | None:
    """The rows of the table's data files ``paths`` (relative to the table), ``schema``'s columns only (files
    without a column read it as null); None if a file is gone. Arrow's own reader on a ``file://`` lake, the
    lake's object store otherwise."""
    if not paths:
        return schema.empty_table()
    if lake.scheme == "file":
        root = lake.table_uri(*parts).split("://", 1)[-1]
        files = [f"{root}/{p}" for p in paths]
        try:
            return pyarrow.dataset.dataset(files, schema=schema, format="parquet").to_table()
        except FileNotFoundError:
            return None
    tables = []
    for path in paths:
        data = lake.get("/".join([*parts, path]))
        if data is None:
            return None
        table = pq.read_table(io.BytesIO(data))
        tables.append(table.select([n for n in schema.names if n in table.schema.names]))
    return pa.concat_tables([_conform(t, schema) for t in tables])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
