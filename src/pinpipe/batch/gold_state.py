"""Incremental gold on DuckDB: the nine tables kept up to date from what changed in silver, exactly.

Who calls what: the batch job (:func:`pinpipe.batch.job.run_batch`, DuckDB engine) calls :func:`refresh_gold`
after its silver merges. The state — counts per key, :mod:`pinpipe.batch.gold_sql` — lives in the Delta table
``<lake>/_meta/gold_state`` with one ``meta`` row naming the silver versions (and table ids) it was computed
from and the gold table versions derived from it. A run:

1. pins the three silver tables at their current versions; if the state is at those versions and every gold
   table is as it left them, there is nothing to do;
2. otherwise reads from each silver log the files removed and added since the state's versions
   (:func:`pinpipe.lake.changes.file_changes`). Rows present on both sides (copied by copy-on-write) cancel;
   the ``ind`` s left are the touched keys. For them it reads the new rows of every kind (only the files their
   buckets and ``ind`` statistics allow) and rebuilds the old rows (new − added + removed), joins each side,
   and folds ``+1`` per new joined row, ``-1`` per old one into the state;
3. derives the nine tables from the state, overwrites those whose rows changed, then overwrites the state (the
   commit point: a run that loses this commit to another writer redoes the refresh from the winner's state).

Whenever the state cannot be trusted — absent, of another format, a silver table recreated (new id) or older
than the state, a log commit or a data file missing (log clean-up, vacuum), a count gone negative — the state is
recomputed from whole silver (DuckDB scanning silver's Parquet files, both joins once). Either way the tables
are identical to :func:`pinpipe.batch.gold.compute_gold` over the same silver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake

from pinpipe import retry
from pinpipe.batch import gold as gold_module
from pinpipe.batch import gold_sql
from pinpipe.lake import changes, delta
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS, SILVER_SCHEMAS, Kind

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("pinpipe.batch.gold_state")

STATE_TABLE = ("_meta", "gold_state")
FORMAT = 1
"""Bumped whenever the state's keys or meaning change: a state of another format is rebuilt."""

STATE_RACE = retry.COMMIT_RACE.but(attempts=5)
_P = "__pinpipe_gold_"


@dataclass
class GoldRefresh:
    """What one :func:`refresh_gold` did: the gold tables it committed and how it got the state."""

    written: list[str]
    mode: str
    """``"unchanged"`` (state and gold current), ``"incremental"``, ``"full"`` or ``"incomplete"`` (no silver)."""
    touched: int = 0
    """``ind`` s whose rows changed since the state (incremental)."""


def refresh_gold(lake: Lake, conn: duckdb.DuckDBPyConnection) -> GoldRefresh:
    """Bring gold up to date with silver (see the module docstring); a lost race on the state's commit re-runs
    the refresh from the winner's state, deriving gold again whatever it finds."""
    attempts: list[int] = []

    def attempt() -> GoldRefresh:
        attempts.append(1)
        with _Scope(conn) as scope:
            return _refresh(lake, scope, shortcut=len(attempts) == 1)

    return retry.call(STATE_RACE, attempt)


class _Scope:
    """The DuckDB connection of one refresh, the Arrow tables it registered and the temp tables it made (all
    dropped at the end)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn
        self.names: list[str] = []
        self.tables: list[str] = []

    def __enter__(self) -> _Scope:
        self.conn.execute("SET TimeZone = 'UTC'")
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            self.conn.unregister(name)
        for name in self.tables:
            self.conn.execute(f"DROP TABLE IF EXISTS {name}")

    def arrow(self, table: pa.Table) -> str:
        name = f"{_P}arrow{len(self.names)}"
        self.conn.register(name, table)
        self.names.append(name)
        return name

    def create(self, name: str, sql: str, params: list[Any] | None = None) -> str:
        table = f"{_P}{name}"
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}", params)
        self.tables.append(table)
        return table


def _refresh(lake: Lake, scope: _Scope, *, shortcut: bool) -> GoldRefresh:
    silver: dict[Kind, DeltaTable] = {}
    for kind in KINDS:
        dt = delta.open_table(lake, "silver", kind)
        if dt is None:
            log.info("gold not computed: silver is not complete yet", extra={"fields": {"missing": kind}})
            return GoldRefresh([], "incomplete")
        silver[kind] = dt
    current = {kind: {"id": str(dt.metadata().id), "version": int(dt.version())} for kind, dt in silver.items()}
    gold_versions = {name: delta.table_version(lake, "gold", name) for name in gold_module.GOLD_TABLES}
    state_dt = delta.open_table(lake, *STATE_TABLE)
    meta = _read_meta(lake, state_dt)
    if shortcut and meta is not None and meta.get("silver") == current and meta.get("gold") == gold_versions:
        return GoldRefresh([], "unchanged")
    mode, touched = "full", 0
    if meta is not None and state_dt is not None and _usable(meta, current):
        found = _fold_changes(lake, scope, silver, meta, state_dt)
        if found is not None:
            mode, touched = "incremental", found
    if mode == "full":
        _full_state(lake, scope, silver)
    written = _write_gold(lake, scope)
    for name in written:
        gold_versions[name] = delta.table_version(lake, "gold", name)
    _write_state(lake, scope, state_dt, {"format": FORMAT, "silver": current, "gold": gold_versions})
    log.info("gold refreshed", extra={"fields": {"mode": mode, "touched": touched, "written": written}})
    return GoldRefresh(written, mode, touched)


META_KEY = "pinpipe.gold"
"""The commit-info key under which each state commit records what it was computed from."""


def _read_meta(lake: Lake, state_dt: DeltaTable | None) -> dict[str, Any] | None:
    """What the state at ``state_dt``'s loaded version was computed from (its commit's info), None if unknown."""
    if state_dt is None:
        return None
    data = lake.get("/".join([*STATE_TABLE, "_delta_log", f"{int(state_dt.version()):020d}.json"]))
    for line in (data or b"").splitlines():
        try:
            info = orjson.loads(line).get("commitInfo")
            meta = orjson.loads(info[META_KEY]) if isinstance(info, dict) and META_KEY in info else None
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return None
        if isinstance(meta, dict):
            return meta
    return None


def _usable(meta: dict[str, Any], current: dict[Kind, dict[str, Any]]) -> bool:
    """The state can be carried forward: same format, same silver tables, none older than the state."""
    silver = meta.get("silver")
    if meta.get("format") != FORMAT or not isinstance(silver, dict):
        return False
    for kind, now in current.items():
        then = silver.get(kind)
        if not isinstance(then, dict) or then.get("id") != now["id"] or not isinstance(then.get("version"), int):
            return False
        if then["version"] > now["version"]:
            return False
    return True


def _gold_schema(kind: Kind) -> pa.Schema:
    return pa.schema([SILVER_SCHEMAS[kind].field(c) for c in gold_module.SILVER_COLUMNS[kind]])


def _files(lake: Lake, scope: _Scope, kind: Kind, paths: list[str]) -> str | None:
    """A relation over the gold columns of the silver files ``paths``; None if one is gone."""
    table = changes.read_files(lake, ("silver", kind), paths, _gold_schema(kind))
    return None if table is None else scope.arrow(table)


def _whole(lake: Lake, scope: _Scope, kind: Kind, dt: DeltaTable) -> str:
    """A relation over the gold columns of every file of the pinned table: DuckDB reads the Parquet files itself
    on a ``file://`` lake (no Arrow copy), Arrow streams them through the table's object store otherwise."""
    columns = ", ".join(f'"{c}"' for c in gold_module.SILVER_COLUMNS[kind])
    files = changes.all_files(dt)
    if not files:
        return scope.arrow(_gold_schema(kind).empty_table())
    if lake.scheme != "file":
        with delta.delta_errors("reading", dt.table_uri):
            dataset = dt.to_pyarrow_dataset()
        return f"(SELECT {columns} FROM {scope.arrow(dataset)})"
    root = lake.table_uri("silver", kind).split("://", 1)[-1]
    listed = ", ".join("'" + f"{root}/{p}".replace("'", "''") + "'" for p in files)
    return f"(SELECT {columns} FROM read_parquet([{listed}]))"


def _full_state(lake: Lake, scope: _Scope, silver: dict[Kind, DeltaTable]) -> None:
    """The state from whole silver, into ``<P>next`` (both joins once, straight from silver's files)."""
    names = {kind: _whole(lake, scope, kind, dt) for kind, dt in silver.items()}
    rows = gold_sql.state_rows_sql(names["pin"], names["geo"], names["user"], 1)
    scope.create("next", gold_sql.aggregate_sql(rows))


def _fold_changes(
    lake: Lake, scope: _Scope, silver: dict[Kind, DeltaTable], meta: dict[str, Any], state_dt: DeltaTable
) -> int | None:
    """Fold the changes since ``meta``'s versions into the state read from ``state_dt``, into ``<P>next``; the
    number of touched ``ind`` s, or None when the changes cannot be known exactly (then: full recompute)."""
    found: dict[Kind, changes.FileChanges] = {}
    for kind, dt in silver.items():
        got = changes.file_changes(lake, ("silver", kind), int(meta["silver"][kind]["version"]), int(dt.version()))
        if got is None:
            log.info("gold state rebuilt: silver history unavailable", extra={"fields": {"kind": kind}})
            return None
        found[kind] = got
    for kind, got in found.items():  # rows of the old version only (gone) and of the new version only (new)
        removed = _files(lake, scope, kind, list(got.removed))
        added = _files(lake, scope, kind, list(got.added))
        if removed is None or added is None:
            log.info("gold state rebuilt: a silver file is gone", extra={"fields": {"kind": kind}})
            return None
        scope.create(f"gone_{kind}", f"SELECT * FROM {removed} EXCEPT ALL SELECT * FROM {added}")
        scope.create(f"new_{kind}", f"SELECT * FROM {added} EXCEPT ALL SELECT * FROM {removed}")
    union = " UNION ".join(f"SELECT ind FROM {_P}{side}_{k}" for k in KINDS for side in ("gone", "new"))
    touched = sorted(int(r[0]) for r in scope.conn.execute(union).fetchall())
    state = _state_relation(lake, scope, state_dt)
    if state is None:
        return None
    keys = ", ".join(gold_sql.KEYS)
    if touched:
        scope.create("touched", "SELECT unnest(?::BIGINT[]) AS ind", [touched])
        for kind, dt in silver.items():  # the touched inds' rows now, then as they were: now - new + gone
            now = _files(lake, scope, kind, changes.key_files(dt, touched))
            if now is None:
                return None
            scope.create(f"now_{kind}", f"SELECT * FROM {now} WHERE ind IN (SELECT ind FROM {_P}touched)")
            scope.create(
                f"then_{kind}",
                f"(SELECT * FROM {_P}now_{kind} EXCEPT ALL SELECT * FROM {_P}new_{kind}) UNION ALL "
                f"SELECT * FROM {_P}gone_{kind}",
            )
        new_rows = gold_sql.state_rows_sql(f"{_P}now_pin", f"{_P}now_geo", f"{_P}now_user", 1)
        old_rows = gold_sql.state_rows_sql(f"{_P}then_pin", f"{_P}then_geo", f"{_P}then_user", -1)
        change = scope.create(
            "change", gold_sql.aggregate_sql(f"SELECT * FROM ({new_rows}) UNION ALL SELECT * FROM ({old_rows})")
        )
    else:
        change = scope.create("change", f"SELECT {keys}, n FROM {state} LIMIT 0")
    scope.create("next", gold_sql.fold_sql(state, change))
    negative = scope.conn.execute(f"SELECT count(*) FROM {_P}next WHERE n < 0").fetchall()[0][0]
    if negative:
        log.warning("gold state rebuilt: a count went negative", extra={"fields": {"keys": int(negative)}})
        return None
    return len(touched)


def _state_relation(lake: Lake, scope: _Scope, state_dt: DeltaTable) -> str | None:
    """The stored state's count rows (the ``meta`` sentinel row left out) as a relation."""
    table = changes.read_files(lake, STATE_TABLE, changes.all_files(state_dt), gold_sql.STATE_SCHEMA)
    if table is None:
        return None
    return f"(SELECT * FROM {scope.arrow(table)} WHERE state <> 'meta')"


def _write_gold(lake: Lake, scope: _Scope) -> list[str]:
    written: list[str] = []
    for name, sql in gold_sql.gold_from_state(f"{_P}next").items():
        table = gold_module.sorted_gold(name, scope.conn.sql(sql).to_arrow_table())
        if retry.call(retry.COMMIT_RACE, delta.overwrite_if_changed, lake, table, "gold", name):
            written.append(name)  # a lost race re-reads the winner's rows: equal rows commit nothing
    return written


def _write_state(lake: Lake, scope: _Scope, state_dt: DeltaTable | None, meta: dict[str, Any]) -> None:
    """Overwrite the state with ``<P>next``, recording ``meta`` in the commit. The table always holds a file (the
    ``meta`` sentinel row), so the overwrite conflicts with any other commit since ``state_dt``'s version: of two
    runs folding changes into one state, only one commits (the other redoes its refresh)."""
    keys = ", ".join(gold_sql.KEYS)
    counts = scope.conn.sql(
        f"SELECT 'meta' AS state, {', '.join('NULL' for _ in gold_sql.KEYS[1:])}, 0 AS n "
        f"UNION ALL SELECT {keys}, n FROM {_P}next"
    ).to_arrow_table()
    table = counts.rename_columns(gold_sql.STATE_SCHEMA.names).cast(gold_sql.STATE_SCHEMA)
    props = CommitProperties(custom_metadata={META_KEY: orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode()})
    uri = lake.table_uri(*STATE_TABLE)
    with delta.delta_errors("writing the gold state", uri):
        if state_dt is None:
            write_deltalake(
                uri, table, mode="overwrite", commit_properties=props, storage_options=lake.storage_options or None
            )
        else:
            write_deltalake(state_dt, table, mode="overwrite", schema_mode="overwrite", commit_properties=props)
