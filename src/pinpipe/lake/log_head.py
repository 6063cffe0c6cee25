"""A long-lived writer's own view of a silver table's latest version, kept ahead of delta-rs: pinpipe writes the
stream's commits to the Delta log itself and reads other writers' commits as JSON.

Why: a kept delta-rs handle pays two calls per merge, the commit (``create_write_transaction``) and the reload the
commit needs (it does not advance the handle), and both rebuild the snapshot's list of active files — about 8 µs
per file per merge (``bench/delta_commit.py``: 14 ms on an empty table, 89 ms at 10,000 files). A stream worker
commits three tables several times a second, so at 10M rows per kind that was most of what a micro-batch's
merge grew by. A :class:`LogHead` costs what the commit holds instead: one put-if-absent of
``_delta_log/<version>.json`` per commit, one read (``file://``: one failed open) per look for newer commits.

Who calls what: :func:`pinpipe.lake.delta.merge_silver` with a :class:`~pinpipe.lake.open_tables.DeltaHandles`
starts one per bucketed silver table (:meth:`LogHead.start`, which lists the table once through delta-rs) and
keeps it in the handles; :func:`~pinpipe.lake.silver_merge.merge_files`, the stream's compaction
(:mod:`pinpipe.stream.compaction`) and :func:`~pinpipe.lake.delta.txn_versions` then use it instead of the
handle's snapshot: :meth:`~LogHead.follow` (newer commits), :meth:`~LogHead.files`, :meth:`~LogHead.txn`,
:meth:`~LogHead.commit`. Every use holds the table's handle lock (:func:`~pinpipe.lake.open_tables.held`).

What it writes is what delta-rs writes for the same commit (``commitInfo``, ``txn``, ``remove``, ``add`` with
statistics), and the same put-if-absent delta-rs uses on both stores: a hard link on ``file://``, a conditional
put on S3 (:meth:`pinpipe.lake.store.Lake.create`), so delta-rs writers (a batch run, the Spark engine, another
worker) and pinpipe's commits exclude each other. A lost race is a
:class:`~pinpipe.errors.CommitConflictError` (the handle and its head are dropped, the retry re-reads the table).
Only tables whose protocol it can write are followed — reader version 1, writer version 2 without an
``appendOnly`` table or column invariants (what pinpipe creates); any other table goes through delta-rs as before.
A commit it cannot fold in (a ``metaData`` or ``protocol`` change, an action it does not know) makes
:meth:`~LogHead.follow` raise :class:`Unfollowable`: the caller drops the head and goes back to delta-rs. So does
a log that no longer holds the head's own version after a long idle spell (:data:`IDLE_CHECK_S`: expired-log
cleanup removed it, and the head would otherwise reuse a version number).

Checkpoints: delta-rs writes one every ``delta.checkpointInterval`` (100) commits after its own commits; after a
commit of the head at such a version, a background thread opens the table at that version and has delta-rs write
its checkpoint and clean up expired log entries (:meth:`~LogHead.wait` joins it; a checkpoint that fails is logged
and left to the next interval: readers then replay more JSON, nothing is lost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from pinpipe import __version__
from pinpipe.errors import CommitConflictError, CorruptStateError
from pinpipe.lake.data_files import (
    TableFile,
    WrittenFile,
    may_hold,
    merge_conflict,
    table_files,
    table_prefix,
    written_table_file,
)
from pinpipe.lake.open_tables import DeltaHandles, delta_errors
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_BUCKET

log = logging.getLogger(__name__)

FOLDED = frozenset({"add", "remove", "txn", "commitInfo"})
"""The actions :meth:`LogHead.follow` folds into its view; any other makes the table :class:`Unfollowable`."""


IDLE_CHECK_S = 600.0
"""A head that has seen no commit for this long checks, at its next look, that the log still holds its version."""


class Unfollowable(CommitConflictError):
    """A commit the head cannot fold in (metadata or protocol changed, an unknown action): another writer changed
    the table under the head. Retryable like a lost race: the handle and its head are dropped, and the retry
    re-reads the table through delta-rs (and starts a new head if the table is still one pinpipe can write)."""

    def __init__(self, what: str, table: str) -> None:
        super().__init__(f"{what} at {table}", hint="retry: the next attempt re-reads the table", table=table)


def writable(dt: Any) -> bool:
    """True if pinpipe may write ``dt``'s table's commits itself: reader version 1, writer version 2 (or 1),
    not append-only, no column invariants."""
    protocol = dt.protocol()
    if protocol.min_reader_version != 1 or protocol.min_writer_version > 2:
        return False
    if protocol.writer_features or protocol.reader_features:
        return False
    if str(dt.metadata().configuration.get("delta.appendOnly", "false")).lower() == "true":
        return False
    return not any("delta.invariants" in (f.metadata or {}) for f in dt.schema().fields)


def log_key(prefix: str, version: int) -> str:
    """The key of a table's commit file (``prefix``: the table's key prefix in the lake)."""
    return f"{prefix}_delta_log/{version:020d}.json"


@dataclass(frozen=True)
class Commit:
    """One commit's actions, as the head folds them."""

    added: list[TableFile]
    removed: list[str]
    txns: dict[str, int]


def parse_commit(data: bytes, table: str) -> Commit:
    """The actions of a commit file (newline-delimited JSON) of ``table``; :class:`Unfollowable` on any the head
    cannot fold."""
    added: list[TableFile] = []
    removed: list[str] = []
    txns: dict[str, int] = {}
    for line in data.splitlines():
        if not line.strip():
            continue
        action: dict[str, Any] = orjson.loads(line)
        unknown = set(action) - FOLDED
        if unknown:
            raise Unfollowable(
                f"a commit holds {', '.join(sorted(unknown))}, which pinpipe's log head does not fold", table
            )
        if (add := action.get("add")) is not None:
            added.append(_table_file(add))
        elif (remove := action.get("remove")) is not None:
            removed.append(str(remove["path"]))
        elif (txn := action.get("txn")) is not None:
            txns[str(txn["appId"])] = int(txn["version"])
    return Commit(added, removed, txns)


def _table_file(add: Mapping[str, Any]) -> TableFile:
    stats = orjson.loads(add["stats"]) if add.get("stats") else {}
    bucket = (add.get("partitionValues") or {}).get(SILVER_BUCKET)
    return TableFile(
        str(add["path"]),
        int(add["size"]),
        int(stats.get("numRecords") or 0),
        (stats.get("minValues") or {}).get("ind"),
        (stats.get("maxValues") or {}).get("ind"),
        None if bucket is None else int(bucket),
    )


def commit_bytes(
    added: Sequence[WrittenFile],
    removed: Sequence[TableFile],
    txns: Mapping[str, int],
    *,
    data_change: bool,
    partition_by: Sequence[str],
    metadata: Mapping[str, str],
    now_ms: int,
) -> bytes:
    """A commit file's content: what delta-rs writes for a transaction of these adds and removes."""
    info: dict[str, Any] = {
        "timestamp": now_ms,
        "operation": "WRITE",
        "operationParameters": {"mode": "Append", "partitionBy": orjson.dumps(list(partition_by)).decode()},
        "clientVersion": f"pinpipe-{__version__}",
        **metadata,
    }
    lines: list[dict[str, Any]] = [{"commitInfo": info}]
    lines += [{"txn": {"appId": app, "version": int(v), "lastUpdated": now_ms}} for app, v in sorted(txns.items())]
    for f in removed:
        remove = {"path": f.path, "dataChange": data_change, "deletionTimestamp": now_ms}
        lines.append({"remove": {**remove, "extendedFileMetadata": True, **_partition(f.bucket), "size": f.size}})
    for w in added:
        add = {"path": w.path, **_partition(w.bucket), "size": w.size, "modificationTime": now_ms}
        lines.append({"add": {**add, "dataChange": data_change, "stats": w.stats}})
    return b"\n".join(orjson.dumps(line) for line in lines) + b"\n"


def _partition(bucket: int | None) -> dict[str, dict[str, str]]:
    return {"partitionValues": {} if bucket is None else {SILVER_BUCKET: str(bucket)}}


def kept_head(lake: Lake, parts: tuple[str, ...], dt: Any, handles: DeltaHandles | None) -> LogHead | None:
    """The head ``handles`` keep for the table at ``parts`` (started on ``dt`` the first time), None without
    handles or for a table pinpipe cannot write. The caller holds the table (:func:`~pinpipe.lake.open_tables.held`)."""
    if handles is None:
        return None
    head = handles.head(parts)
    if head is None and (head := LogHead.start(lake, parts, dt)) is not None:
        handles.keep_head(parts, head)
    return head


class LogHead:
    """The latest version of one table as its writer knows it: the version, its files (by bucket, with the
    table's row and byte totals, so a merge's plan costs the buckets it touches, not the table), the application
    transactions committed since ``dt``'s snapshot (older ones are ``dt``'s)."""

    def __init__(
        self, lake: Lake, parts: tuple[str, ...], dt: Any, version: int, files: Sequence[TableFile], interval: int
    ) -> None:
        self.lake = lake
        self.parts = parts
        self.dt = dt
        self.version = version
        self.txns: dict[str, int] = {}
        self.checkpoint_interval = interval
        self.rows = 0
        """Rows of :attr:`version` (from the files' statistics)."""
        self.size = 0
        """Bytes of :attr:`version`'s data files."""
        self._files: dict[str, TableFile] = {}
        self._buckets: dict[int | None, dict[str, TableFile]] = {}
        self._checkpointing: threading.Thread | None = None
        self._advanced = time.monotonic()
        self._fold(Commit(list(files), [], {}))

    @classmethod
    def start(cls, lake: Lake, parts: tuple[str, ...], dt: Any) -> LogHead | None:
        """A head at ``dt``'s version (its files listed once), None if pinpipe cannot write the table
        (:func:`writable`)."""
        with delta_errors("reading the table's protocol", dt.table_uri):
            if not writable(dt):
                return None
            interval = int(dt.metadata().configuration.get("delta.checkpointInterval") or 100)
            files = table_files(dt)
        return cls(lake, parts, dt, int(dt.version()), files, max(1, interval))

    @property
    def prefix(self) -> str:
        return table_prefix(*self.parts)

    def files(self) -> list[TableFile]:
        """The files of :attr:`version`."""
        return list(self._files.values())

    def bucket_files(self, bucket: int | None) -> list[TableFile]:
        """The files of :attr:`version` in ``bucket``."""
        return list(self._buckets.get(bucket, {}).values())

    def file(self, path: str) -> TableFile:
        return self._files[path]

    def txn(self, app_id: str) -> int | None:
        """The last version ``app_id`` committed, as of :attr:`version`."""
        if app_id in self.txns:
            return self.txns[app_id]
        value = self.dt.transaction_version(app_id)
        return None if value is None else int(value)

    def follow(self) -> list[Commit]:
        """Fold in every commit after :attr:`version`; the commits folded (none: nothing new).
        :class:`Unfollowable` if one cannot be folded (the caller goes back to delta-rs)."""
        folded: list[Commit] = []
        while (data := self.lake.get(log_key(self.prefix, self.version + 1))) is not None:
            try:
                commit = parse_commit(data, self.dt.table_uri)
            except (ValueError, KeyError, TypeError) as exc:  # a garbled commit file: not a lost race
                raise CorruptStateError(
                    f"commit {self.version + 1} of {self.dt.table_uri} is not a Delta commit: {exc}",
                    hint="the table's log was damaged: restore the commit file from a backup, or rebuild the table",
                    table=self.dt.table_uri,
                ) from exc
            self._fold(commit)
            self.version += 1
            folded.append(commit)
        now = time.monotonic()
        if folded:
            self._advanced = now
        elif now - self._advanced > IDLE_CHECK_S:
            self._check_not_cleaned()
            self._advanced = now
        return folded

    def _check_not_cleaned(self) -> None:
        """After a long idle spell: the head's own version must still be in the log. Expired-log cleanup (at a
        checkpoint, of commits older than ``delta.logRetentionDuration``) could otherwise have removed the commits
        after it, and the head would take a version number another writer used long ago."""
        if self.lake.get(log_key(self.prefix, self.version)) is None:
            raise Unfollowable(f"the log no longer holds version {self.version}, the head's", self.dt.table_uri)

    def check_unchanged(self, removed: Sequence[str], keys: Mapping[int, np.ndarray[Any, Any]]) -> None:
        """:meth:`follow`, then raise :class:`CommitConflictError` if the commits folded removed one of the files a
        merge planned on the head's files rewrites (``removed``), or added a file still there that may hold one of
        its keys (``keys``: sorted, by bucket) — the check :func:`pinpipe.lake.data_files.check_unchanged` makes
        for a delta-rs commit. The head's commit that follows cannot land on a version it has not checked (its
        put-if-absent fails)."""
        before = self.version
        folded = self.follow()
        if not folded:
            return
        gone = [path for path in removed if path not in self._files]
        fresh = {f.path: f for commit in folded for f in commit.added if f.path in self._files}
        new = [f for f in fresh.values() if f.bucket is not None and f.bucket in keys and may_hold(f, keys[f.bucket])]
        if gone or new:
            raise merge_conflict(len(gone), len(new), before, self.dt.table_uri)

    def _fold(self, commit: Commit) -> None:
        for path in commit.removed:
            if (f := self._files.pop(path, None)) is not None:
                self._buckets[f.bucket].pop(path, None)
                self.rows -= f.num_records
                self.size -= f.size
        for f in commit.added:
            if (old := self._files.get(f.path)) is not None:  # the same path added again: replaced
                self.rows -= old.num_records
                self.size -= old.size
            self._files[f.path] = f
            self._buckets.setdefault(f.bucket, {})[f.path] = f
            self.rows += f.num_records
            self.size += f.size
        self.txns.update(commit.txns)

    def commit(
        self,
        added: Sequence[WrittenFile],
        removed: Sequence[TableFile] = (),
        app_txns: Mapping[str, int] | None = None,
        *,
        data_change: bool = True,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Commit version :attr:`version` + 1 (the caller followed and checked first); the version committed.
        :class:`CommitConflictError` if another writer committed that version first."""
        version = self.version + 1
        partition_by = list(self.dt.metadata().partition_columns)
        now = int(time.time() * 1000)
        data = commit_bytes(
            added,
            removed,
            dict(app_txns or {}),
            data_change=data_change,
            partition_by=partition_by,
            metadata=dict(metadata or {}),
            now_ms=now,
        )
        if not self.lake.create(log_key(self.prefix, version), data):
            raise CommitConflictError(
                f"another writer committed version {version} of {self.dt.table_uri} first",
                hint="retry: the next attempt re-reads the table",
                table=self.dt.table_uri,
            )
        self._fold(Commit([written_table_file(f) for f in added], [f.path for f in removed], dict(app_txns or {})))
        self.version = version
        self._advanced = time.monotonic()
        if version % self.checkpoint_interval == 0:
            self._checkpoint(version)
        return version

    def _checkpoint(self, version: int) -> None:
        if self._checkpointing is not None and self._checkpointing.is_alive():
            return  # the next interval's checkpoint covers this one's commits too
        self._checkpointing = threading.Thread(
            target=self._write_checkpoint, args=(version,), name="pinpipe-checkpoint", daemon=True
        )
        self._checkpointing.start()

    def _write_checkpoint(self, version: int) -> None:
        from deltalake import DeltaTable

        uri = self.dt.table_uri
        try:
            table = DeltaTable(uri, version=version, storage_options=self.lake.storage_options or None)
            table.create_checkpoint()
            table.cleanup_metadata()
        except Exception as exc:
            log.warning(
                "writing a checkpoint failed", extra={"fields": {"table": uri, "version": version, "error": str(exc)}}
            )

    def wait(self) -> None:
        """Wait for a checkpoint being written."""
        if self._checkpointing is not None:
            self._checkpointing.join()
