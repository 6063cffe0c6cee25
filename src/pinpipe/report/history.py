"""Who wrote silver: the commits of ``<lake>/silver/<kind>``, read from its Delta log and told apart by writer.

Called by :func:`pinpipe.report.html.collect_report`. Both paths write the same silver tables, each commit
carrying its application transactions (:mod:`pinpipe.lake.delta`): ``pinpipe-batch:<topic>:<partition>`` for the
batch job, ``pinpipe-stream:<topic>:<partition>`` for the stream worker; compaction commits are ``OPTIMIZE``
operations that change no row. A commit's rows come from the ``commitInfo`` entries pinpipe's own merge writes
(``pinpipe.rows_inserted`` / ``pinpipe.rows_updated``, :func:`pinpipe.lake.data_files.row_metadata`; its
compaction says ``pinpipe.operation: OPTIMIZE``), else from ``commitInfo.operationMetrics`` (``MERGE``:
``num_target_rows_inserted/updated/deleted``; ``WRITE``: ``num_added_rows``). This is what reconciles a batch run
that reports "written 0 … collapsed 2,000" with a silver table of 1,359 rows: the stream path inserted them first.

Only the newest :data:`MAX_COMMITS` commit files are read (each is one object GET, :data:`READERS` at a time);
rows inserted by older commits (or by commits whose files were cleaned up after a checkpoint) are reported as
``earlier`` — the difference between the table's row count and the rows inserted by the commits read, so the
figures always add up to the table. A stream worker commits once per micro-batch, so on a busy pipeline the
commits read may cover only the last hours; the split is then mostly ``earlier``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

from pinpipe.lake.data_files import ROWS_INSERTED, ROWS_UPDATED, commit_operation
from pinpipe.lake.store import Lake
from pinpipe.tables import BATCH_APP_PREFIX, STREAM_APP_PREFIX, Kind

Writer = Literal["batch", "stream", "compaction", "other"]
WRITERS: tuple[Writer, ...] = get_args(Writer)


MAX_COMMITS = 2_000
"""Commit files read per table, newest first."""
READERS = 16
"""Commit files fetched at once (on S3 each is a GET of tens of milliseconds)."""

_COMMIT_FILE = re.compile(r"/_delta_log/(\d{20})\.json$")


@dataclass(frozen=True)
class Commit:
    """One silver commit: when, by whom, and the rows it inserted and updated."""

    version: int
    at: dt.datetime
    writer: Writer
    operation: str
    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class SilverHistory:
    """The commits read of one silver table and what they add up to."""

    kind: Kind
    rows: int
    commits: list[Commit]
    complete: bool
    """True when every commit since version 0 was read."""
    inserted: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    commit_counts: Counter[str] = field(default_factory=Counter)

    @property
    def earlier(self) -> int:
        """Rows not accounted for by the commits read (inserted before them)."""
        deleted = sum(c.deleted for c in self.commits)
        return self.rows - sum(self.inserted.values()) + deleted

    @property
    def last(self) -> Commit | None:
        """The newest commit that inserted or updated rows, None if none of those read did."""
        changing = [c for c in self.commits if c.inserted or c.updated]
        return changing[-1] if changing else None


def _metric(metrics: dict[str, Any], *names: str) -> int:
    for name in names:
        value = metrics.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def parse_commit(version: int, data: bytes) -> Commit | None:
    """The :class:`Commit` of one ``_delta_log/<version>.json`` file (None if it has no ``commitInfo``)."""
    info: dict[str, Any] | None = None
    apps: list[str] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        action = orjson.loads(line)
        if not isinstance(action, dict):
            continue
        if isinstance(action.get("commitInfo"), dict):
            info = action["commitInfo"]
        elif isinstance(action.get("txn"), dict):
            apps.append(str(action["txn"].get("appId", "")))
    if info is None:
        return None
    operation = commit_operation(info)
    writer: Writer
    if operation == "OPTIMIZE":
        writer = "compaction"
    elif any(a.startswith(STREAM_APP_PREFIX) for a in apps):
        writer = "stream"
    elif any(a.startswith(BATCH_APP_PREFIX) for a in apps):
        writer = "batch"
    else:
        writer = "other"
    metrics = info.get("operationMetrics") or {}
    inserted = updated = deleted = 0
    if writer != "compaction" and ROWS_INSERTED in info:  # pinpipe's own merge (no delta-rs metrics)
        inserted, updated = int(info[ROWS_INSERTED]), int(info.get(ROWS_UPDATED) or 0)
    elif writer != "compaction" and isinstance(metrics, dict):
        inserted = _metric(metrics, "num_target_rows_inserted", "num_added_rows", "numTargetRowsInserted")
        updated = _metric(metrics, "num_target_rows_updated", "numTargetRowsUpdated")
        deleted = _metric(metrics, "num_target_rows_deleted", "num_deleted_rows", "numTargetRowsDeleted")
    stamp = info.get("timestamp")
    at = dt.datetime.fromtimestamp(stamp / 1000, dt.UTC) if isinstance(stamp, int | float) else dt.datetime.min
    return Commit(version, at.replace(tzinfo=dt.UTC), writer, operation, inserted, updated, deleted)


def silver_history(lake: Lake, kind: Kind, rows: int | None, *, max_commits: int = MAX_COMMITS) -> SilverHistory | None:
    """The history of ``<lake>/silver/<kind>`` (None when there is no such table: ``rows`` is None)."""
    if rows is None:
        return None
    versions: list[tuple[int, str]] = []
    for obj in lake.iter(f"silver/{kind}/_delta_log/"):
        match = _COMMIT_FILE.search("/" + obj.key)
        if match:
            versions.append((int(match.group(1)), obj.key))
    versions.sort()
    chosen = versions[-max_commits:]
    with ThreadPoolExecutor(READERS, "pinpipe-report-history") as pool:  # one GET per commit: overlap them
        blobs = list(pool.map(lambda vk: lake.get(vk[1]), chosen))
    commits: list[Commit] = []
    for (version, _), data in zip(chosen, blobs, strict=True):
        commit = None if data is None else parse_commit(version, data)
        if commit is not None:
            commits.append(commit)
    complete = bool(chosen) and chosen[0][0] == 0 and len(commits) == len(chosen)
    # tables are created empty (a conflict-checked CREATE TABLE), then merged into: the creation wrote no rows
    commits = [c for c in commits if c.operation != "CREATE TABLE"]
    history = SilverHistory(kind, rows, commits, complete)
    for c in commits:
        history.inserted[c.writer] += c.inserted
        history.updated[c.writer] += c.updated
        history.commit_counts[c.writer] += 1
    return history


def rows_per_day(histories: dict[Kind, SilverHistory | None]) -> dict[str, dict[Kind, int]]:
    """Silver rows written (inserted + updated) per UTC day and kind, by either path, over the commits read."""
    days: dict[str, dict[Kind, int]] = {}
    for kind, history in histories.items():
        for c in history.commits if history else []:
            if c.inserted or c.updated:
                day = days.setdefault(c.at.strftime("%Y-%m-%d"), {})
                day[kind] = day.get(kind, 0) + c.inserted + c.updated
    return dict(sorted(days.items()))
