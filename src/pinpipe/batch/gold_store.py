"""Where incremental gold keeps its state: the Delta table ``<lake>/_meta/gold_state``, a chain of commits.

Who calls what: :mod:`pinpipe.batch.gold_state` reads the chain with :func:`read_state`, then commits either a
whole state (:func:`write_full`, an overwrite: the chain starts again) or the signed rows of one refresh's
change (:func:`append_change`, an append). Each commit records in its commit info (key :data:`META_KEY`) what
the state then holds: the silver versions and table ids it was computed from, the gold table versions derived
from it, and ``base`` — the state version it was folded onto (None for a whole state).

A commit counts only if its ``base`` is the chain's last counting commit: of two runs folding their change
onto the same state, the second to commit does not count (its rows are ignored by every reader), and
:func:`append_change` tells its writer so (:class:`CommitConflictError`: redo the refresh from the winner's
state). So every commit costs what changed, never the size of the state, and concurrent runs stay exact.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from pinpipe.errors import CommitConflictError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake

STATE_TABLE = ("_meta", "gold_state")
META_KEY = "pinpipe.gold"
"""The commit-info key under which each state commit records what it holds."""


@dataclass(frozen=True)
class StoredState:
    """The counting chain of the state table: its last commit's version and meta, and the data files of all its
    commits (the whole state first, then each change), relative to the table."""

    version: int
    meta: dict[str, Any]
    files: tuple[str, ...]
    chain: tuple[int, ...]
    """The versions of the counting commits (the whole state's first)."""


def _commit(lake: Lake, version: int) -> tuple[dict[str, Any] | None, list[str]] | None:
    """(our meta or None, the files the commit added) of one commit of the state table; None if it is missing."""
    data = lake.get("/".join([*STATE_TABLE, "_delta_log", f"{version:020d}.json"]))
    if data is None:
        return None
    meta: dict[str, Any] | None = None
    added: list[str] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        action = orjson.loads(line)
        info = action.get("commitInfo")
        if isinstance(info, dict) and isinstance(info.get(META_KEY), str):
            try:
                found = orjson.loads(info[META_KEY])
            except orjson.JSONDecodeError:
                found = None
            meta = found if isinstance(found, dict) else None
        if isinstance(action.get("add"), dict):
            added.append(unquote(action["add"]["path"]))
    return meta, added


def read_state(lake: Lake) -> StoredState | None:
    """The state's counting chain (see the module docstring), None if there is no usable state."""
    dt = delta.open_table(lake, *STATE_TABLE)
    if dt is None:
        return None
    latest = int(dt.version())
    commits: dict[int, tuple[dict[str, Any] | None, list[str]]] = {}
    start = latest
    while start >= 0:  # back to the newest whole state
        got = _commit(lake, start)
        if got is None:
            return None
        commits[start] = got
        if got[0] is not None and got[0].get("base") is None:
            break
        start -= 1
    if start < 0:
        return None
    chain = [start]
    files = list(commits[start][1])
    for version in range(start + 1, latest + 1):
        meta, added = commits[version]
        if meta is not None and meta.get("base") == chain[-1]:
            chain.append(version)
            files.extend(added)
    last = commits[chain[-1]][0]
    assert last is not None  # every version in the chain has our meta
    return StoredState(chain[-1], last, tuple(files), tuple(chain))


def _props(meta: dict[str, Any]) -> CommitProperties:
    return CommitProperties(custom_metadata={META_KEY: orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode()})


def write_full(lake: Lake, table: pa.Table, meta: dict[str, Any]) -> None:
    """Replace the state with ``table`` (a whole state): the chain starts again from this commit."""
    uri = lake.table_uri(*STATE_TABLE)
    with delta.delta_errors("writing the gold state", uri):
        write_deltalake(
            uri,
            table,
            mode="overwrite",
            schema_mode="overwrite",
            commit_properties=_props({**meta, "base": None}),
            storage_options=lake.storage_options or None,
        )


def append_change(lake: Lake, table: pa.Table, meta: dict[str, Any], base: int) -> None:
    """Append one refresh's signed rows onto the chain ending at version ``base``; raises
    :class:`CommitConflictError` if another commit onto ``base`` counted first (the caller redoes its refresh)."""
    run = uuid.uuid4().hex
    uri = lake.table_uri(*STATE_TABLE)
    with delta.delta_errors("writing the gold state", uri):
        write_deltalake(
            uri,
            table,
            mode="append",
            commit_properties=_props({**meta, "base": base, "run": run}),
            storage_options=lake.storage_options or None,
        )
    after = read_state(lake)
    mine = [v for v in (after.chain if after else ()) if v > base and _run_of(lake, v) == run]
    if not mine:
        raise CommitConflictError(
            f"the gold state on {uri} changed while this run folded its change in",
            hint="retry: the refresh is redone from the state that counted",
        )


def _run_of(lake: Lake, version: int) -> str | None:
    got = _commit(lake, version)
    run = None if got is None or got[0] is None else got[0].get("run")
    return run if isinstance(run, str) else None
