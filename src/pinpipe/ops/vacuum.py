"""VACUUM of the lake's Delta tables: delete the data files that no version within the retention still needs.

Every silver upsert rewrites the files holding an updated row, every compaction replaces small files with packed
ones, and every gold overwrite replaces a table's files: the replaced files leave the table's current version
(a ``remove`` action, a *tombstone*) but stay in the store, so without a vacuum the lake grows by what was
replaced as well as by what was added — at a stream's pace, dozens of small files a second. Called by
``pinpipe vacuum`` (:mod:`pinpipe.cli.vacuum_cmd`) and by ``pinpipe batch`` after its run
(``vacuum.with_batch``, at most once every ``vacuum.every_hours``: :func:`due`).

A pass runs delta-rs's ``vacuum`` on each table pinpipe writes (:data:`TABLES`): the default (*lite*) mode deletes
the files of tombstones older than the retention — without listing the store, so its cost is the files it
deletes, not the table's size; ``full`` also lists the table's directory and deletes files no version
references (what an attempt that lost a commit race wrote) once they are older than the retention. Each pass
that deletes something records ``VACUUM START`` / ``VACUUM END`` commits, which change no row.

The retention (``vacuum.retention_hours``, 168 h = Delta's default ``deletedFileRetentionDuration``) bounds
how far back a reader can go: a reader of a version older than it (time travel, a job that ran longer) may find
files gone. pinpipe's own readers do not go back that far: the stream and the batch read the latest version;
gold's incremental state (:mod:`pinpipe.batch.gold_state`) reads the files removed since the version it was
computed at, and when one is gone — a daily job that did not run for longer than the retention — it rebuilds
from the whole of silver, as after any other gap. A pass may run while the sink, the stream and the batch run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from pinpipe.batch.gold import GOLD_TABLES
from pinpipe.lake.open_tables import delta_errors, open_table
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS

TABLES: tuple[tuple[str, str], ...] = (
    *(("silver", kind) for kind in KINDS),
    *(("quarantine", kind) for kind in KINDS),
    *(("gold", name) for name in GOLD_TABLES),
    ("_meta", "runs"),
    ("_meta", "gold_state"),
)
"""The Delta tables pinpipe writes in a lake."""

LAST_PASS = "_meta/vacuum.json"
"""Where the last pass that deleted for real recorded when it ran (``{"at": unix seconds, ...}``)."""

FIRST_RUN_COMMIT = "_meta/runs/_delta_log/00000000000000000000.json"
"""The first commit of the batch's run log: when the lake's first batch ran."""


@dataclass(frozen=True)
class Vacuumed:
    """What a pass did (or, dry, would do) to one table: the data files it deleted, relative to the table."""

    table: str
    files: list[str]


def vacuum_lake(lake: Lake, retention_hours: int, *, dry_run: bool = False, full: bool = False) -> list[Vacuumed]:
    """Vacuum every table of :data:`TABLES` that exists in ``lake`` (see the module docstring); per table, the
    files deleted (``dry_run``: that would be)."""
    if retention_hours < 0:
        raise ValueError(f"retention_hours {retention_hours} is negative")
    out: list[Vacuumed] = []
    for parts in TABLES:
        dt = open_table(lake, *parts)
        if dt is None:
            continue
        with delta_errors("vacuuming", dt.table_uri):
            files = dt.vacuum(
                retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=full
            )
        out.append(Vacuumed("/".join(parts), sorted(files)))
    if not dry_run:
        doc = {"at": time.time(), "retention_hours": retention_hours, "files": sum(len(t.files) for t in out)}
        lake.put(LAST_PASS, orjson.dumps(doc))
    return out


def due(lake: Lake, every_hours: float, retention_hours: int) -> bool:
    """Whether a pass should run now: the last one (:data:`LAST_PASS`) ran ``every_hours`` ago or more. With no
    record of one, only when the lake's first batch run (``_meta/runs``'s first commit) is older than the
    retention — no tombstone of a younger lake can be due yet; the clock then starts now (recorded)."""
    last = _seconds(lake.get(LAST_PASS), "at")
    now = time.time()
    if last is not None:
        return now - last >= every_hours * 3600
    first_run = _seconds(lake.get(FIRST_RUN_COMMIT), "commitInfo", "timestamp")
    if first_run is not None and now - first_run / 1000 < retention_hours * 3600:
        lake.put(LAST_PASS, orjson.dumps({"at": now, "retention_hours": retention_hours, "files": 0}))
        return False
    return True


def _seconds(data: bytes | None, *path: str) -> float | None:
    """The number at ``path`` in a JSON object (the first line holding it, for a Delta commit), None if absent."""
    for line in (data or b"").splitlines():
        try:
            value: object = orjson.loads(line)
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        except orjson.JSONDecodeError:
            return None
    return None
