"""Delta tables on the lake, through deltalake (delta-rs): silver upserts, quarantine inserts, reads, compaction.

Who calls what: the batch job and the stream worker call :func:`write_quarantine` then :func:`merge_silver` per
kind, each silver commit carrying the application transactions ``{app_id: next_offset}`` of the records it holds,
so rows and progress land in one atomic commit; on start they read :func:`txn_version` and skip what silver
already holds (delta-rs records the versions but does not enforce them — callers compare with ``>=``). The
batch job also writes gold with :func:`overwrite_if_changed` and its run log with :func:`append`.

Idempotence:

- :func:`merge_silver` upserts by ``ind``: a new ``ind`` is inserted, an existing one is updated only when some
  column differs (null-safe), an identical one is left alone — replaying a batch changes no row;
- :func:`write_quarantine` inserts rows whose ``(topic, partition, offset)`` is absent — replaying is a no-op
  (and commits nothing);
- a call with nothing to change commits nothing, except that :func:`merge_silver` with application
  transactions always commits them.

Foreign errors are mapped here: a lost commit race (``CommitFailedError``) is :class:`CommitConflictError`
(retryable: re-read and retry), other delta-rs / object-store failures :class:`StoreUnavailableError`, a table
whose schema is not ours :class:`CorruptStateError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError, TableNotFoundError

from pinpipe.errors import CommitConflictError, CorruptStateError, StoreUnavailableError
from pinpipe.lake.store import Lake
from pinpipe.tables import QUARANTINE_SCHEMA, SILVER_SCHEMAS, Kind

if TYPE_CHECKING:
    import duckdb

T = TypeVar("T")

QUARANTINE_KEY = ("topic", "partition", "offset")


@dataclass(frozen=True)
class MergeStats:
    """What one :func:`merge_silver` did. ``version`` is the table version it committed, None if it committed
    nothing (nothing to change and no application transactions)."""

    inserted: int
    updated: int
    unchanged: int
    version: int | None


@contextmanager
def _mapped(what: str, uri: str) -> Iterator[None]:
    try:
        yield
    except CommitFailedError as exc:
        raise CommitConflictError(
            f"{what} on {uri} lost a commit race: {exc}", hint="retry: re-read the table version", table=uri
        ) from exc
    except SchemaMismatchError as exc:
        raise CorruptStateError(
            f"{what} on {uri}: the table's schema is not pinpipe's: {exc}",
            hint="move the table away (or point --lake elsewhere) and re-run",
            table=uri,
        ) from exc
    except (DeltaError, OSError) as exc:
        raise StoreUnavailableError(f"{what} on {uri} failed: {exc}", table=uri) from exc


def _open(lake: Lake, *parts: str) -> DeltaTable | None:
    uri = lake.table_uri(*parts)
    try:
        return DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:
        raise StoreUnavailableError(f"could not open Delta table {uri}: {exc}", table=uri) from exc


def _props(app_txns: Mapping[str, int] | None, metadata: Mapping[str, str] | None = None) -> CommitProperties:
    txns = [Transaction(app_id=app, version=int(v)) for app, v in sorted((app_txns or {}).items())]
    return CommitProperties(app_transactions=txns or None, custom_metadata=dict(metadata or {}) or None)


def table_version(lake: Lake, *parts: str) -> int | None:
    """The current version of the table at ``parts`` (``"silver", "pin"``), None if there is no table."""
    dt = _open(lake, *parts)
    return None if dt is None else int(dt.version())


def row_count(lake: Lake, *parts: str) -> int | None:
    """The number of rows of the table at ``parts`` (from the log's file statistics), None if there is none."""
    dt = _open(lake, *parts)
    if dt is None:
        return None
    with _mapped("counting", dt.table_uri):
        return int(dt.count())


def txn_version(lake: Lake, kind: Kind, app_id: str) -> int | None:
    """The last version committed by ``app_id`` on ``silver/<kind>``, None if it never committed (or no table)."""
    return txn_versions(lake, kind, [app_id])[app_id]


def txn_versions(lake: Lake, kind: Kind, app_ids: list[str]) -> dict[str, int | None]:
    """:func:`txn_version` for many app ids with one table load."""
    dt = _open(lake, "silver", kind)
    if dt is None:
        return dict.fromkeys(app_ids)
    with _mapped("reading application transactions", dt.table_uri):
        return {app: (None if (v := dt.transaction_version(app)) is None else int(v)) for app in app_ids}


def read_table(lake: Lake, *parts: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The whole table at ``parts`` as Arrow (``read_table(lake, "silver", "pin")``), or only ``columns`` of it;
    None if there is no table."""
    dt = _open(lake, *parts)
    if dt is None:
        return None
    with _mapped("reading", dt.table_uri):
        return dt.to_pyarrow_table(columns=None if columns is None else list(columns))


def count_changed(lake: Lake, kind: Kind, rows: pa.Table, conn: duckdb.DuckDBPyConnection) -> int:
    """How many of ``rows`` (``SILVER_SCHEMAS[kind]``) have an ``ind`` that ``<lake>/silver/<kind>`` holds with
    different content (null-safe, every column). The batch job calls it with
    :meth:`~pinpipe.clean.CleanResult.first_rows` before merging: each is a conflict with the row it follows.
    ``conn`` is a DuckDB connection of the caller's thread (``engine.duckdb()``)."""
    dt = _open(lake, "silver", kind)
    if dt is None or rows.num_rows == 0:
        return 0
    schema = SILVER_SCHEMAS[kind]
    differs = " OR ".join(f'(s."{f.name}" IS DISTINCT FROM t."{f.name}")' for f in schema if f.name != "ind")
    with _mapped("comparing with silver", dt.table_uri):
        silver = dt.to_pyarrow_dataset()
    conn.register("__pinpipe_silver", silver)
    conn.register("__pinpipe_rows", rows.select(schema.names).cast(schema))
    try:
        sql = f"SELECT count(*) FROM __pinpipe_rows s JOIN __pinpipe_silver t ON s.ind = t.ind WHERE {differs}"
        found = conn.sql(sql).fetchall()
    finally:
        conn.unregister("__pinpipe_rows")
        conn.unregister("__pinpipe_silver")
    return int(found[0][0])


def _differs(schema: pa.Schema, key: str) -> str:
    return " OR ".join(f"(s.`{f.name}` IS DISTINCT FROM t.`{f.name}`)" for f in schema if f.name != key)


def merge_silver(lake: Lake, kind: Kind, silver: pa.Table, app_txns: Mapping[str, int] | None = None) -> MergeStats:
    """Upsert ``silver`` (``SILVER_SCHEMAS[kind]``, one row per ``ind``) into ``<lake>/silver/<kind>`` by ``ind``,
    in one commit that also records ``app_txns``; creates the table on first use."""
    schema = SILVER_SCHEMAS[kind]
    silver = silver.select(schema.names).cast(schema)
    uri = lake.table_uri("silver", kind)
    dt = _open(lake, "silver", kind)
    props = _props(app_txns)
    if dt is None:
        with _mapped("creating silver", uri):
            write_deltalake(
                uri, silver, mode="append", storage_options=lake.storage_options or None, commit_properties=props
            )
        return MergeStats(silver.num_rows, 0, 0, table_version(lake, "silver", kind))
    if silver.num_rows == 0:
        if not app_txns:
            return MergeStats(0, 0, 0, None)
        with _mapped("recording progress on silver", uri):
            write_deltalake(dt, silver, mode="append", commit_properties=props)
        return MergeStats(0, 0, 0, int(_reload(dt)))
    before = int(dt.version())
    with _mapped("merging into silver", uri):
        metrics = (
            dt.merge(silver, predicate="t.ind = s.ind", source_alias="s", target_alias="t", commit_properties=props)
            .when_matched_update_all(predicate=_differs(schema, "ind"))
            .when_not_matched_insert_all()
            .execute()
        )
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    updated = int(metrics.get("num_target_rows_updated", 0))
    after = int(_reload(dt))
    if after == before and app_txns:  # a merge that changed nothing commits nothing: record the progress anyway
        with _mapped("recording progress on silver", uri):
            write_deltalake(dt, silver.slice(0, 0), mode="append", commit_properties=props)
        after = int(_reload(dt))
    return MergeStats(inserted, updated, silver.num_rows - inserted - updated, after if after != before else None)


def _reload(dt: DeltaTable) -> int:
    dt.update_incremental()
    return int(dt.version())


def write_quarantine(lake: Lake, kind: Kind, rows: pa.Table) -> int:
    """Insert quarantined rows into ``<lake>/quarantine/<kind>`` unless their ``(topic, partition, offset)`` is
    there already; the number inserted. Commits nothing when there is nothing new."""
    if rows.num_rows == 0:
        return 0
    rows = rows.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
    rows = _first_per_key(rows)
    uri = lake.table_uri("quarantine", kind)
    dt = _open(lake, "quarantine", kind)
    if dt is None:
        with _mapped("creating quarantine", uri):
            write_deltalake(uri, rows, mode="append", storage_options=lake.storage_options or None)
        return int(rows.num_rows)
    existing = dt.to_pyarrow_table(columns=list(QUARANTINE_KEY))
    if existing.num_rows:
        seen = existing.append_column("_seen", pa.nulls(existing.num_rows, pa.bool_()).fill_null(True))
        present = rows.join(seen, keys=list(QUARANTINE_KEY), join_type="left outer")
        rows = (
            present.filter(pc.is_null(present.column("_seen"))).select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
        )
    if rows.num_rows == 0:
        return 0
    with _mapped("merging into quarantine", uri):
        metrics = (
            dt.merge(
                rows,
                predicate="t.topic = s.topic AND t.`partition` = s.`partition` AND t.`offset` = s.`offset`",
                source_alias="s",
                target_alias="t",
            )
            .when_not_matched_insert_all()
            .execute()
        )
    return int(metrics.get("num_target_rows_inserted", 0))


def _first_per_key(rows: pa.Table) -> pa.Table:
    """One row per ``(topic, partition, offset)`` (a batch may hold a record twice only by a caller's mistake)."""
    numbered = rows.append_column("_i", pa.array(range(rows.num_rows), pa.int64()))
    firsts = numbered.group_by(list(QUARANTINE_KEY)).aggregate([("_i", "min")]).column("_i_min")
    if len(firsts) == rows.num_rows:
        return rows
    return rows.take(pc.sort_indices(firsts))


def overwrite_if_changed(lake: Lake, table: pa.Table, *parts: str) -> bool:
    """Replace the table at ``parts`` with ``table`` (written in its own row order) unless it holds exactly these
    rows already (compared as sets of rows); True if it committed."""
    uri = lake.table_uri(*parts)
    dt = _open(lake, *parts)
    if dt is not None:
        with _mapped("reading", uri):
            old = dt.to_pyarrow_table()
        if old.schema.equals(table.schema, check_metadata=False) and _canonical(old).equals(_canonical(table)):
            return False
    with _mapped("overwriting", uri):
        write_deltalake(
            dt if dt is not None else uri,
            table,
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=None if dt is not None else (lake.storage_options or None),
        )
    return True


def _canonical(table: pa.Table) -> pa.Table:
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_nested(f.type)]
    return table.sort_by(keys) if table.num_rows > 1 and keys else table


def append(lake: Lake, table: pa.Table, *parts: str) -> None:
    """Append rows to the table at ``parts`` (created on first use)."""
    uri = lake.table_uri(*parts)
    with _mapped("appending", uri):
        write_deltalake(uri, table, mode="append", storage_options=lake.storage_options or None)


def compact(lake: Lake, *parts: str) -> dict[str, Any] | None:
    """Bin-pack the table's small files (``optimize.compact``); the metrics, None if there is no table. App
    transaction versions survive compaction."""
    dt = _open(lake, *parts)
    if dt is None:
        return None
    with _mapped("compacting", dt.table_uri):
        metrics: dict[str, Any] = dt.optimize.compact()
        return metrics


def retry_conflicts(call: Callable[[], T], attempts: int = 5) -> T:
    """Run ``call``, again after a lost commit race (up to ``attempts`` times)."""
    for attempt in range(attempts):
        try:
            return call()
        except CommitConflictError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
