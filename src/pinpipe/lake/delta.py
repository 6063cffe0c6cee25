"""Delta tables on the lake, through deltalake (delta-rs): silver upserts, quarantine inserts, reads.

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

Layout: silver is partitioned by ``bucket`` (:func:`pinpipe.tables.silver_bucket`, the log's placement) in small
files (:data:`SILVER_FILE_BYTES`), each holding a narrow ``ind`` range. A bucketed silver table is upserted by
pinpipe's own copy-on-write (:mod:`pinpipe.lake.bucket_merge`, committed through delta-rs's transaction API, or
by the kept handle's :class:`~pinpipe.lake.log_head.LogHead` for a long-lived writer),
which reads and rewrites only the files holding its keys and keeps every file's range narrow; a table without the
bucket column (created by an older pinpipe) and quarantine go through delta-rs's MERGE, whose predicate names the
batch's ``ind`` or offset ranges (:mod:`pinpipe.lake.pruning`). Every table is created empty first
(:func:`_create`, a conflict-checked commit), then only merged into or appended to.

Handles: a long-lived writer (the stream worker) passes a :class:`~pinpipe.lake.open_tables.DeltaHandles` as
``handles=`` so each table is opened once per process and every commit starts from the version its last own
commit produced (why that is safe against other writers: :mod:`pinpipe.lake.open_tables`); without it every call
opens the table, as the batch job does.

Foreign errors go through :func:`delta_errors` (``errors.FOREIGN_ERRORS["delta"]``; it and :func:`open_table`
live in :mod:`pinpipe.lake.open_tables`): a lost commit race is :class:`CommitConflictError` (re-read and retry),
a table whose schema is not ours :class:`CorruptStateError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError

from pinpipe.lake.data_files import catch_up
from pinpipe.lake.log_head import Unfollowable, kept_head
from pinpipe.lake.open_tables import DeltaHandles as DeltaHandles
from pinpipe.lake.open_tables import buckets_of, held
from pinpipe.lake.open_tables import delta_errors as delta_errors
from pinpipe.lake.open_tables import open_table as open_table
from pinpipe.lake.pruning import key_predicate, offset_predicate
from pinpipe.lake.silver_merge import SILVER_FILE_BYTES as SILVER_FILE_BYTES
from pinpipe.lake.silver_merge import MergeStats as MergeStats
from pinpipe.lake.silver_merge import merge_files
from pinpipe.lake.silver_merge import reload as _reload
from pinpipe.lake.silver_read import count_changed as count_changed
from pinpipe.lake.silver_read import read_table as read_table
from pinpipe.lake.silver_read import silver_dataset as silver_dataset
from pinpipe.lake.silver_read import silver_files as silver_files
from pinpipe.lake.store import Lake
from pinpipe.tables import (
    QUARANTINE_SCHEMA,
    SILVER_BUCKET,
    SILVER_BUCKETS,
    SILVER_BUCKETS_KEY,
    SILVER_SCHEMAS,
    Kind,
    silver_bucket,
    silver_table_schema,
)

T = TypeVar("T")

QUARANTINE_KEY = ("topic", "partition", "offset")


def _props(app_txns: Mapping[str, int] | None, metadata: Mapping[str, str] | None = None) -> CommitProperties:
    txns = [Transaction(app_id=app, version=int(v)) for app, v in sorted((app_txns or {}).items())]
    return CommitProperties(app_transactions=txns or None, custom_metadata=dict(metadata or {}) or None)


def table_version(lake: Lake, *parts: str) -> int | None:
    """The current version of the table at ``parts`` (``"silver", "pin"``), None if there is no table."""
    dt = open_table(lake, *parts)
    return None if dt is None else int(dt.version())


def row_count(lake: Lake, *parts: str) -> int | None:
    """The number of rows of the table at ``parts`` (from the log's file statistics), None if there is none."""
    dt = open_table(lake, *parts)
    if dt is None:
        return None
    with delta_errors("counting", dt.table_uri):
        return int(dt.count())


def txn_version(lake: Lake, kind: Kind, app_id: str) -> int | None:
    """The last version committed by ``app_id`` on ``silver/<kind>``, None if it never committed (or no table)."""
    return txn_versions(lake, kind, [app_id])[app_id]


def txn_versions(
    lake: Lake, kind: Kind, app_ids: list[str], *, handles: DeltaHandles | None = None
) -> dict[str, int | None]:
    """:func:`txn_version` for many app ids with one table load. With ``handles`` the kept handle is brought to
    the table's latest version first (a resume must see every writer's progress, not the handle's)."""
    parts = ("silver", kind)
    kept = handles.get(parts) if handles is not None else None
    dt = kept or open_table(lake, *parts, handles=handles)
    if dt is None:
        return dict.fromkeys(app_ids)
    with held(handles, parts), delta_errors("reading application transactions", dt.table_uri):
        head = handles.head(parts) if handles is not None else None
        if head is not None and handles is not None:
            try:
                head.follow()
            except Unfollowable:  # another writer changed the table's metadata: read it afresh
                handles.discard(parts)
                dt = open_table(lake, *parts, handles=handles) or dt
                kept = None
            else:
                return {app: head.txn(app) for app in app_ids}
        if kept is not None:
            catch_up(dt)
        return {app: (None if (v := dt.transaction_version(app)) is None else int(v)) for app in app_ids}


def _differs(schema: pa.Schema, key: str) -> str:
    return " OR ".join(f"(s.`{f.name}` IS DISTINCT FROM t.`{f.name}`)" for f in schema if f.name != key)


def _create(
    lake: Lake,
    what: str,
    parts: tuple[str, ...],
    schema: pa.Schema,
    file_bytes: int | None,
    handles: DeltaHandles | None = None,
) -> DeltaTable:
    """The table at ``parts`` (the kept handle with ``handles``), created empty first if there is none. Creation
    is a commit of version 0 and nothing else: of two writers creating it at once one wins and the other opens
    the winner's table, so rows are only ever written by MERGE (never by an unchecked first append). delta-rs's
    commit retries would land the loser's CREATE TABLE as version 1 (a second ``metaData`` with a new table id,
    which later commits of the other writers then fail against), so creation runs without them."""
    dt = open_table(lake, *parts, handles=handles)
    if dt is not None:
        return dt
    if handles is not None:
        return handles.keep(parts, _create(lake, what, parts, schema, file_bytes))
    uri = lake.table_uri(*parts)
    bucketed = SILVER_BUCKET in schema.names
    config = {"delta.targetFileSize": str(file_bytes)} if file_bytes else {}
    if bucketed:
        config[SILVER_BUCKETS_KEY] = str(SILVER_BUCKETS)
    try:
        return DeltaTable.create(
            uri,
            schema,
            mode="ignore",
            partition_by=[SILVER_BUCKET] if bucketed else None,
            configuration=config or None,
            storage_options=lake.storage_options or None,
            commit_properties=CommitProperties(max_commit_retries=0),
            raise_if_key_not_exists=False,
        )
    except (DeltaError, OSError) as exc:
        dt = open_table(lake, *parts)  # another writer committed version 0 first
        if dt is not None:
            return dt
        with delta_errors(what, uri):
            raise exc


def _with_buckets(silver: pa.Table, buckets: int | None) -> pa.Table:
    """``silver`` with its bucket column (when the table has one), sorted by (bucket, ind): new files are written
    clustered by ``ind`` within their bucket."""
    if buckets is None:
        return silver.sort_by("ind") if silver.num_rows > 1 else silver
    values = pa.array([silver_bucket(i, buckets) for i in silver.column("ind").to_pylist()], pa.int32())
    out = silver.append_column(pa.field(SILVER_BUCKET, pa.int32(), nullable=False), values)
    return out.sort_by([(SILVER_BUCKET, "ascending"), ("ind", "ascending")]) if out.num_rows > 1 else out


def merge_silver(
    lake: Lake,
    kind: Kind,
    silver: pa.Table,
    app_txns: Mapping[str, int] | None = None,
    *,
    handles: DeltaHandles | None = None,
    firsts: pa.Table | None = None,
) -> MergeStats:
    """Upsert ``silver`` (``SILVER_SCHEMAS[kind]``, one row per ``ind``) into ``<lake>/silver/<kind>`` by ``ind``,
    in one commit that also records ``app_txns``; creates the (empty, bucketed) table on first use. Only the files
    that can hold one of its keys are read and only those holding an updated row rewritten
    (:mod:`pinpipe.lake.bucket_merge`; on a table without the bucket column, delta-rs's MERGE with the batch's
    ``ind`` ranges in its predicate). With ``handles`` the table's kept handle is used (and dropped if the call
    fails). ``firsts``: the first records of the ``ind`` s that came more than once in the run, which a bucketed
    table's merge compares with silver for :attr:`MergeStats.changed_firsts`."""
    parts = ("silver", kind)
    with held(handles, parts):
        return _merge_silver(lake, kind, silver, app_txns, handles, firsts)


def _merge_silver(
    lake: Lake,
    kind: Kind,
    silver: pa.Table,
    app_txns: Mapping[str, int] | None,
    handles: DeltaHandles | None,
    firsts: pa.Table | None,
) -> MergeStats:
    schema = SILVER_SCHEMAS[kind]
    silver = silver.select(schema.names).cast(schema)
    uri = lake.table_uri("silver", kind)
    table_schema = silver_table_schema(kind)
    dt = _create(lake, "creating silver", ("silver", kind), table_schema, SILVER_FILE_BYTES[kind], handles)
    buckets = buckets_of(dt)
    if buckets is not None:
        head = kept_head(lake, ("silver", kind), dt, handles)
        return merge_files(lake, kind, dt, silver, app_txns, buckets, firsts, head)
    source = _with_buckets(silver, buckets)
    props = _props(app_txns)
    if source.num_rows == 0:
        rows = _rows(dt)
        if not app_txns:
            return MergeStats(0, 0, 0, None, rows_before=rows, rows_after=rows)
        with delta_errors("recording progress on silver", uri):
            write_deltalake(dt, source, mode="append", commit_properties=props)
        return MergeStats(0, 0, 0, int(_reload(dt)), rows_before=rows, rows_after=rows)
    before = int(dt.version())
    rows_before = _rows(dt)
    predicate = f"t.ind = s.ind AND {key_predicate(silver.column('ind').to_pylist(), buckets, 't')}"
    with delta_errors("merging into silver", uri):
        metrics = (
            dt.merge(source, predicate=predicate, source_alias="s", target_alias="t", commit_properties=props)
            .when_matched_update_all(predicate=_differs(schema, "ind"))
            .when_not_matched_insert_all()
            .execute()
        )
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    updated = int(metrics.get("num_target_rows_updated", 0))
    after = int(dt.version())  # the table object now holds the version this merge committed (if any)
    rows_after = _rows(dt)
    if after == before and app_txns:  # a merge that changed nothing commits nothing: record the progress anyway
        with delta_errors("recording progress on silver", uri):
            write_deltalake(dt, source.slice(0, 0), mode="append", commit_properties=props)
        after = int(_reload(dt))
    return MergeStats(
        inserted,
        updated,
        silver.num_rows - inserted - updated,
        after if after != before else None,
        files_rewritten=int(metrics.get("num_target_files_removed", 0)),
        files_added=int(metrics.get("num_target_files_added", 0)),
        rows_before=rows_before,
        rows_after=rows_after,
    )


def _rows(dt: DeltaTable) -> int:
    with delta_errors("counting", dt.table_uri):
        return int(dt.count())


def write_quarantine(lake: Lake, kind: Kind, rows: pa.Table, *, handles: DeltaHandles | None = None) -> int:
    """Insert quarantined rows into ``<lake>/quarantine/<kind>`` unless their ``(topic, partition, offset)`` is
    there already; the number inserted. Commits nothing when there is nothing new. The table is created empty
    first (a conflict-checked commit), then every write is a MERGE that reads only the files whose offset
    statistics overlap the rows'. With ``handles`` the table's kept handle is used (dropped if the call fails)."""
    if rows.num_rows == 0:
        return 0
    rows = rows.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
    rows = _first_per_key(rows)
    uri = lake.table_uri("quarantine", kind)
    parts = ("quarantine", kind)
    key = "t.topic = s.topic AND t.`partition` = s.`partition` AND t.`offset` = s.`offset`"
    with held(handles, parts), delta_errors("merging into quarantine", uri):
        dt = _create(lake, "creating quarantine", parts, QUARANTINE_SCHEMA, None, handles)
        metrics = (
            dt.merge(rows, predicate=f"{key} AND {offset_predicate(rows)}", source_alias="s", target_alias="t")
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
    dt = open_table(lake, *parts)
    if dt is None:  # create it empty first (conflict-checked), then overwrite like any other version
        dt = _create(lake, "creating", parts, table.schema, None)
    else:
        with delta_errors("reading", dt.table_uri):
            old = dt.to_pyarrow_table()
        if old.schema.equals(table.schema, check_metadata=False) and _canonical(old).equals(_canonical(table)):
            return False
    with delta_errors("overwriting", dt.table_uri):
        write_deltalake(dt, table, mode="overwrite", schema_mode="overwrite")
    return True


def _canonical(table: pa.Table) -> pa.Table:
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_nested(f.type)]
    return table.sort_by(keys) if table.num_rows > 1 and keys else table


def append(lake: Lake, table: pa.Table, *parts: str) -> None:
    """Append rows to the table at ``parts`` (created empty first, through a conflict-checked commit, so two
    writers appending to a missing table both land their rows)."""
    dt = _create(lake, "creating", parts, table.schema, None)
    with delta_errors("appending", dt.table_uri):
        write_deltalake(dt, table, mode="append")
