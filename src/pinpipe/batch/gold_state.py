"""Incremental gold on DuckDB: the nine tables kept up to date from what changed in silver, exactly.

Who calls what: the batch job (:func:`pinpipe.batch.job.run_batch`, DuckDB engine) calls :func:`refresh_gold`
after its silver merges. The state — counts per key, :mod:`pinpipe.batch.gold_sql` — lives in the Delta table
``<lake>/_meta/gold_state`` (:mod:`pinpipe.batch.gold_store`), whose commits record the silver versions (and
table ids) it was computed from and the gold table versions derived from it. A run:

1. pins the three silver tables at their current versions; if the state is at those versions and every gold
   table is as it left them, there is nothing to do;
2. otherwise reads from each silver log the files removed and added since the state's versions
   (:func:`pinpipe.lake.changes.file_changes`) and joins them on ``ind``: rows copied unchanged by
   copy-on-write cancel, the ``ind`` s left are the touched keys, with their old and new rows (an ``ind``
   unchanged in one kind is read from the few files its bucket and statistics allow). Each side is joined as
   gold joins it, and ``+1`` per new joined row, ``-1`` per old one is the change to the state;
3. derives the nine tables from the state plus the change, overwrites those whose rows changed, then appends
   the change to the state (the commit point: of two runs folding onto one state only the first counts, and the
   other redoes its refresh from it).

When the change rewrote most of silver (:data:`REBUILD_FRACTION`) one scan of silver is cheaper than reading
both sides of it, and the state is rebuilt. So it is whenever the state cannot be trusted — absent, of another
format, a silver table recreated (new id) or older than the state, a log commit or a data file missing (log
clean-up, vacuum), a count gone negative: DuckDB scans silver's Parquet files, both joins once, within
:data:`REBUILD_MEMORY`. Either way the tables are identical to :func:`pinpipe.batch.gold.compute_gold` over the
same silver (``tests/unit/test_gold_incremental.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import DeltaTable

from pinpipe import retry
from pinpipe.batch import gold as gold_module
from pinpipe.batch import gold_sql, gold_store
from pinpipe.lake import changes, delta
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS, SILVER_SCHEMAS, Kind

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("pinpipe.batch.gold_state")

STATE_TABLE = gold_store.STATE_TABLE
FORMAT = 1
"""Bumped whenever the state's keys or meaning change: a state of another format is rebuilt."""

STATE_RACE = retry.COMMIT_RACE.but(attempts=5)
REBUILD_FRACTION = 0.5
"""Rebuild from whole silver instead when the files removed and added since the state number more than this share
of silver's files: reading both sides of a change that rewrote most of silver costs more than one scan of it."""
REBUILD_MEMORY = ("1GB", "3GB")
"""DuckDB's memory limits while it rebuilds the state from whole silver, tried in turn: 10M rows per kind fit in
the first, spilling, in a fresh process; after a long backlog run the same connection may need more (the second
try is logged)."""
MAX_CHAIN = 32
"""After this many changes appended onto one whole state, the next refresh writes a whole state again."""
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
        self.stored = ""
        """The stored state's rows as a relation (once read)."""

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
    stored = gold_store.read_state(lake)
    meta = stored.meta if stored is not None else None
    if shortcut and meta is not None and meta.get("silver") == current and meta.get("gold") == gold_versions:
        return GoldRefresh([], "unchanged")
    mode, touched = "full", 0
    if stored is not None and _usable(stored.meta, current):
        found = _fold_changes(lake, scope, silver, stored)
        if found is not None:
            mode, touched = "incremental", found
    if mode == "full":
        _full_state(lake, scope, silver)
    written = _write_gold(lake, scope)
    for name in written:
        gold_versions[name] = delta.table_version(lake, "gold", name)
    meta = {"format": FORMAT, "silver": current, "gold": gold_versions}
    if mode == "incremental" and stored is not None and len(stored.chain) < MAX_CHAIN:
        gold_store.append_change(lake, _state_table(scope, f"SELECT * FROM {_P}change"), meta, stored.version)
    elif mode == "incremental":  # a long chain: one whole state again (what every reader would sum up)
        whole = gold_sql.fold_sql(scope.stored, f"{_P}change")
        gold_store.write_full(lake, _state_table(scope, f"SELECT * FROM ({whole}) WHERE state <> 'meta'"), meta)
    else:
        gold_store.write_full(lake, _state_table(scope, f"SELECT * FROM {_P}next"), meta)
    log.info("gold refreshed", extra={"fields": {"mode": mode, "touched": touched, "written": written}})
    return GoldRefresh(written, mode, touched)


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
    """A relation over the gold columns of the silver files ``paths``; None if one is gone. DuckDB reads the
    Parquet files itself on a ``file://`` lake; elsewhere they come through the lake's object store."""
    if lake.scheme == "file" and paths:
        root = lake.table_uri("silver", kind).split("://", 1)[-1]
        files = [f"{root}/{p}" for p in paths]
        if not all(os.path.exists(f) for f in files):
            return None
        return _parquet(kind, files)
    table = changes.read_files(lake, ("silver", kind), paths, _gold_schema(kind))
    return None if table is None else scope.arrow(table)


def _parquet(kind: Kind, files: list[str]) -> str:
    columns = ", ".join(f'"{c}"' for c in gold_module.SILVER_COLUMNS[kind])
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"(SELECT {columns} FROM read_parquet([{listed}]))"


def _whole(lake: Lake, scope: _Scope, kind: Kind, dt: DeltaTable) -> str:
    """A relation over the gold columns of every file of the pinned table: DuckDB reads the Parquet files itself
    on a ``file://`` lake (no Arrow copy), Arrow streams them through the table's object store otherwise."""
    files = changes.all_files(dt)
    if not files:
        return scope.arrow(_gold_schema(kind).empty_table())
    if lake.scheme != "file":
        columns = ", ".join(f'"{c}"' for c in gold_module.SILVER_COLUMNS[kind])
        with delta.delta_errors("reading", dt.table_uri):
            dataset = dt.to_pyarrow_dataset()
        return f"(SELECT {columns} FROM {scope.arrow(dataset)})"
    root = lake.table_uri("silver", kind).split("://", 1)[-1]
    return _parquet(kind, [f"{root}/{p}" for p in files])


def _full_state(lake: Lake, scope: _Scope, silver: dict[Kind, DeltaTable]) -> None:
    """The state from whole silver, into ``<P>next`` (both joins once, straight from silver's files), within
    :data:`REBUILD_MEMORY` (beyond it DuckDB spills the joins and the aggregation to the engine's temporary
    directory; a limit it cannot work within is followed by the next)."""
    names = {kind: _whole(lake, scope, kind, dt) for kind, dt in silver.items()}
    rows = gold_sql.state_rows_sql(names["pin"], names["geo"], names["user"], 1)
    import duckdb

    limit = scope.conn.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    try:
        for n, cap in enumerate(REBUILD_MEMORY, start=1):
            scope.conn.execute(f"SET memory_limit = '{cap}'")
            try:
                scope.create("counts", gold_sql.aggregate_sql(rows))
                break
            except duckdb.OutOfMemoryException as exc:
                if n == len(REBUILD_MEMORY):
                    raise
                log.warning(
                    "gold state rebuild ran out of memory; trying a higher limit",
                    extra={"fields": {"limit": cap, "next": REBUILD_MEMORY[n], "error": str(exc).splitlines()[0]}},
                )
    finally:
        scope.conn.execute(f"SET memory_limit = '{limit}'")
    scope.create("next", f"SELECT * FROM {_P}counts UNION ALL {gold_sql.users_year_full_sql(f'{_P}counts')}")
    scope.create("cur", f"SELECT * FROM {_P}next WHERE state <> 'users'")


def _fold_changes(
    lake: Lake, scope: _Scope, silver: dict[Kind, DeltaTable], stored: gold_store.StoredState
) -> int | None:
    """The signed rows by which silver's changes since the stored state's versions move it (``<P>change``) and
    the current counts of every state but ``users`` (``<P>cur``); the number of touched ``ind`` s, or None when
    the changes cannot be known exactly (then: full recompute).

    Silver holds one row per ``ind`` in every version, so the removed files hold at most one old row per
    ``ind`` and the added files at most one new row: an ``ind`` changed where the two differ (or one is
    missing), which one join on ``ind`` finds, keeping both rows. A touched ``ind`` unchanged in a kind (it
    changed in another) is the same row before and after, read from the few files it can live in."""
    found: dict[Kind, changes.FileChanges] = {}
    for kind, dt in silver.items():
        since = int(stored.meta["silver"][kind]["version"])
        got = changes.file_changes(lake, ("silver", kind), since, int(dt.version()))
        if got is None:
            log.info("gold state rebuilt: silver history unavailable", extra={"fields": {"kind": kind}})
            return None
        found[kind] = got
    moved = sum(len(got.removed) + len(got.added) for got in found.values())
    total = sum(len(changes.all_files(dt)) for dt in silver.values())
    if moved > REBUILD_FRACTION * total:
        log.info(
            "gold state rebuilt: the change rewrote most of silver",
            extra={"fields": {"files_changed": moved, "files": total}},
        )
        return None
    for kind, got in found.items():
        removed = _files(lake, scope, kind, list(got.removed))
        added = _files(lake, scope, kind, list(got.added))
        if removed is None or added is None:
            log.info("gold state rebuilt: a silver file is gone", extra={"fields": {"kind": kind}})
            return None
        columns = gold_module.SILVER_COLUMNS[kind]
        differs = " OR ".join(f'o."{c}" IS DISTINCT FROM n."{c}"' for c in columns if c != "ind")
        sides = ", ".join(f'{side}."{c}" AS "{side}_{c}"' for side in ("o", "n") for c in columns)
        diff = scope.create(  # one pass over both sides: the rows of the changed inds, old and new
            f"diff_{kind}",
            f"SELECT {sides} FROM {removed} o FULL JOIN {added} n ON o.ind = n.ind "
            f"WHERE o.ind IS NULL OR n.ind IS NULL OR {differs}",
        )
        for side, name in (("o", "gone"), ("n", "new")):
            picked = ", ".join(f'"{side}_{c}" AS "{c}"' for c in columns)
            scope.create(f"{name}_{kind}", f"SELECT {picked} FROM {diff} WHERE {side}_ind IS NOT NULL")
        scope.create(f"changed_{kind}", f"SELECT coalesce(o_ind, n_ind) AS ind FROM {diff}")
    touched = scope.create("touched", " UNION ".join(f"SELECT ind FROM {_P}changed_{k}" for k in KINDS))
    count = int(scope.conn.execute(f"SELECT count(*) FROM {touched}").fetchall()[0][0])
    state = _state_relation(lake, scope, stored)
    if state is None:
        return None
    scope.stored = state
    rest = scope.create("rest", f"SELECT * FROM {state} WHERE state <> 'users'")  # small: all but the users
    keys = ", ".join(gold_sql.KEYS)
    if count:
        for kind, dt in silver.items():  # a touched ind unchanged in this kind: its row, from where it lives
            same = scope.conn.execute(
                f"SELECT ind FROM {touched} WHERE ind NOT IN (SELECT ind FROM {_P}changed_{kind})"
            ).fetchall()
            inds = [int(r[0]) for r in same]
            found_at = _files(lake, scope, kind, changes.key_files(dt, inds))
            if found_at is None:
                return None
            scope.create(
                f"same_{kind}",
                f"SELECT * FROM {found_at} WHERE ind IN (SELECT ind FROM {touched}) "
                f"AND ind NOT IN (SELECT ind FROM {_P}changed_{kind})",
            )
            scope.create(f"now_{kind}", f"SELECT * FROM {_P}new_{kind} UNION ALL SELECT * FROM {_P}same_{kind}")
            scope.create(f"then_{kind}", f"SELECT * FROM {_P}gone_{kind} UNION ALL SELECT * FROM {_P}same_{kind}")
        new_rows = gold_sql.state_rows_sql(f"{_P}now_pin", f"{_P}now_geo", f"{_P}now_user", 1)
        old_rows = gold_sql.state_rows_sql(f"{_P}then_pin", f"{_P}then_geo", f"{_P}then_user", -1)
        rows = scope.create(
            "rows", gold_sql.aggregate_sql(f"SELECT * FROM ({new_rows}) UNION ALL SELECT * FROM ({old_rows})")
        )
    else:
        rows = scope.create("rows", f"SELECT {keys}, n FROM {rest} LIMIT 0")
    negative = int(scope.conn.execute(gold_sql.negative_users_sql(state, rows)).fetchall()[0][0])
    change = scope.create("change", f"SELECT * FROM {rows} UNION ALL {gold_sql.users_year_change_sql(state, rows)}")
    scope.create("cur", gold_sql.fold_sql(rest, f"(SELECT * FROM {change} WHERE state <> 'users')"))
    negative += int(scope.conn.execute(f"SELECT count(*) FROM {_P}cur WHERE n < 0").fetchall()[0][0])
    if negative:
        log.warning("gold state rebuilt: a count went negative", extra={"fields": {"keys": int(negative)}})
        return None
    return count


def _state_relation(lake: Lake, scope: _Scope, stored: gold_store.StoredState) -> str | None:
    """The stored chain's rows (whole state, then each change; the ``meta`` sentinel rows left out)."""
    if lake.scheme == "file":
        root = lake.table_uri(*gold_store.STATE_TABLE).split("://", 1)[-1]
        files = [f"{root}/{p}" for p in stored.files]
        if not all(os.path.exists(f) for f in files):
            return None
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        return f"(SELECT * FROM read_parquet([{listed}]) WHERE state <> 'meta')"
    table = changes.read_files(lake, gold_store.STATE_TABLE, list(stored.files), gold_sql.STATE_SCHEMA)
    if table is None:
        return None
    return f"(SELECT * FROM {scope.arrow(table)} WHERE state <> 'meta')"


def _write_gold(lake: Lake, scope: _Scope) -> list[str]:
    written: list[str] = []
    for name, sql in gold_sql.gold_from_state(f"{_P}cur").items():
        table = gold_module.sorted_gold(name, scope.conn.sql(sql).to_arrow_table())
        if retry.call(retry.COMMIT_RACE, delta.overwrite_if_changed, lake, table, "gold", name):
            written.append(name)  # a lost race re-reads the winner's rows: equal rows commit nothing
    return written


def _state_table(scope: _Scope, sql: str) -> pa.Table:
    """The rows of ``sql`` (state keys and ``n``) as a state table, led by the ``meta`` sentinel row."""
    keys = ", ".join(gold_sql.KEYS)
    nulls = ", ".join("NULL" for _ in gold_sql.KEYS[1:])
    counts = scope.conn.sql(f"SELECT 'meta', {nulls}, 0 UNION ALL SELECT {keys}, n FROM ({sql})").to_arrow_table()
    return counts.rename_columns(gold_sql.STATE_SCHEMA.names).cast(gold_sql.STATE_SCHEMA)
