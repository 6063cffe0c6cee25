"""The batch job: landed objects → cleaning → quarantine and silver Delta → gold Delta, incrementally.

Incremental and exactly once: each silver commit carries, per topic-partition it holds records of, the
application transaction ``pinpipe-batch:<topic>:<partition>`` = the offset after the last record it included.
A run reads those versions, lists ``topics/<topic>/partition=<p>/…`` (topics ``<prefix>.<kind>`` and
``streaming-<prefix>-<kind>`` only) and processes, in offset order, only the records at or beyond them. Per kind
the writes are quarantine first (insert-if-absent: replaying it is a no-op) then the silver merge (rows and
progress in one commit) — a crash between the two, or anywhere else, leaves a state the next run completes
without loss or duplicates. A run that finds nothing new commits nothing to silver, quarantine or gold.

Gold follows silver incrementally on DuckDB (:mod:`pinpipe.batch.gold_state`: aggregate state updated from the
silver log's changes since it was computed, rebuilt from whole silver when it cannot be trusted); on other engines
it is recomputed from the whole of silver (:func:`pinpipe.batch.gold.compute_gold`) when silver changed or a gold
table is missing. Each ``<lake>/gold/<name>`` is overwritten only if its rows changed. Reads of silver are bounded by the run's keys: the
MERGE predicate names their buckets and ranges, the row counts come from the Delta log's statistics, and the
merge itself compares each ``ind``'s first record of the run with silver's row (for a table from before the bucket
column, :mod:`pinpipe.batch.legacy_counts` reads silver first). Two runs at once on one
lake are safe: the loser of a commit race re-reads the winner's progress and redoes that kind. Every run appends one
row per kind to ``<lake>/_meta/runs`` (:data:`~pinpipe.lake.runs.RUNS_SCHEMA`) and must balance
``read = written + collapsed + quarantined`` (``written = inserted + updated``; ``collapsed`` = records that
changed nothing: re-sends, records overtaken by a later one of the same ``ind``, identical to silver already),
else :class:`~pinpipe.errors.AccountingError`. ``conflicts`` counts changes of a row's content, as the oracle does
over the whole send order: a record that differs from the previous record of its ``ind`` in the run, or — for the
run's first record of an ``ind`` — from the row silver held before the run.

Bounded memory: each kind's pending records are cleaned and committed in chunks of about ``chunk_records``
(``batch.chunk_records``) cut in the order the latest-record rule compares (:mod:`pinpipe.batch.chunks`), each
chunk its own quarantine write and silver merge carrying its progress, so a crash between chunks resumes after
the last committed one. The landed objects are listed once per run; gold is brought up to date once, after every
kind. The run still records one row per kind, the sum of its chunks: ``read``, ``inserted``, ``quarantined`` and
``conflicts`` are exactly what one unchunked run counts. A later chunk's change to a row an earlier chunk of the
run merged counts as collapsed (the earlier write was overtaken), as one merge would count it; only for an
``ind`` silver held before the run whose records fall in several chunks can the split between ``updated`` and
``collapsed`` differ from one merge's (a chunk that left the row as it was and a later one that changed it count
it collapsed; a change undone by a later chunk counts as updated) — ``written + collapsed`` is the same. A run
that dies after some chunks' commits has not recorded itself: ``pinpipe accounting`` reports those chunks'
records as *batch unrecorded* (as for any run killed after a commit); the next run processes the rest.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pinpipe import retry
from pinpipe.batch import gold as gold_module
from pinpipe.batch import gold_state
from pinpipe.batch.chunks import Chunk, iter_chunks
from pinpipe.batch.legacy_counts import changes_before, written_before
from pinpipe.clean import clean_records
from pinpipe.config import BatchSettings
from pinpipe.engine import Engine, SparkEngine
from pinpipe.errors import AccountingError
from pinpipe.lake import delta
from pinpipe.lake.open_tables import buckets_of
from pinpipe.lake.runs import RUNS_SCHEMA, RUNS_TABLE, Balance
from pinpipe.lake.store import Lake, parse_landed_key
from pinpipe.tables import KINDS, Kind, batch_app_id, kind_of_topic

log = logging.getLogger("pinpipe.batch.job")

KIND_RACE = retry.COMMIT_RACE.but(attempts=5)
"""A kind whose silver commit lost a race with another writer is redone from its progress, up to 5 times."""

DEFAULT_CHUNK_RECORDS: int = BatchSettings.model_fields["chunk_records"].default
"""Records per chunk when the caller does not say (``batch.chunk_records``'s default)."""

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: called as objects are read and kinds are written."""


@dataclass
class KindRun(Balance):
    """What one run did for one kind, counted as it goes; it must balance (:class:`~pinpipe.lake.runs.Balance`)."""

    kind: Kind
    objects: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    collapsed: int = 0
    conflicts: int = 0
    quarantined: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> tuple[int, int, int, int, int]:
        return self.read, self.inserted, self.updated, self.collapsed, self.quarantined

    def accounting_line(self) -> str:
        return (
            f"{self.kind:<5} read {self.read} = written {self.written} (inserted {self.inserted}, updated "
            f"{self.updated}) + collapsed duplicates {self.collapsed} + quarantined {self.quarantined}; "
            f"conflicts {self.conflicts}; objects {self.objects}"
        )


@dataclass
class BatchResult:
    run_id: str
    started_at: datetime
    finished_at: datetime
    kinds: dict[Kind, KindRun]
    gold_written: list[str]

    @property
    def total(self) -> KindRun:
        total = KindRun("pin")
        for run in self.kinds.values():
            for name in ("objects", "read", "inserted", "updated", "collapsed", "conflicts", "quarantined"):
                setattr(total, name, getattr(total, name) + getattr(run, name))
        return total


@dataclass(frozen=True)
class _Object:
    key: str
    topic: str
    partition: int
    start: int


def landed_objects(lake: Lake, prefix: str) -> dict[Kind, list[_Object]]:
    """Landed objects of our topics per kind, in (topic, partition, start offset) order."""
    found: dict[Kind, list[_Object]] = {kind: [] for kind in KINDS}
    for info in lake.iter("topics/"):
        parsed = parse_landed_key(info.key)
        if parsed is None:
            continue
        topic, partition, start = parsed
        kind = kind_of_topic(prefix, topic)
        if kind is None or f"topics/{topic}/partition={partition}/" not in info.key:
            continue
        found[kind].append(_Object(info.key, topic, partition, start))
    for objects in found.values():
        objects.sort(key=lambda o: (o.topic, o.partition, o.start))
    return found


def pending_objects(objects: list[_Object], done: dict[str, int | None]) -> list[tuple[_Object, int]]:
    """(object, first offset to take) for every object that may hold records beyond the committed position."""
    out: list[tuple[_Object, int]] = []
    for i, obj in enumerate(objects):
        position = done.get(batch_app_id(obj.topic, obj.partition)) or 0
        following = objects[i + 1] if i + 1 < len(objects) else None
        same_tp = following is not None and (following.topic, following.partition) == (obj.topic, obj.partition)
        if same_tp and following is not None and following.start <= position:
            continue  # wholly below the committed position: the next object starts at or before it
        out.append((obj, position))
    return out


def run_batch(
    lake: Lake,
    engine: Engine,
    prefix: str,
    *,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    progress: Progress | None = None,
    gold: bool = True,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
) -> BatchResult:
    """One batch run over ``lake`` (see the module docstring); returns its accounting. Each kind's new records
    are cleaned and committed ``chunk_records`` at a time (``batch.chunk_records``). On the Spark engine the
    executors do the work (:func:`pinpipe.batch.spark_job.run_batch_on_spark`; ``chunk_records`` does not
    apply)."""
    if isinstance(engine, SparkEngine):
        from pinpipe.batch.spark_job import run_batch_on_spark

        return run_batch_on_spark(
            lake, engine, prefix, interval_start=interval_start, interval_end=interval_end, progress=progress, gold=gold
        )
    started = datetime.now(UTC)
    run_id = uuid.uuid4().hex
    report = progress or (lambda step, done, total: None)
    objects = landed_objects(lake, prefix)
    runs: dict[Kind, KindRun] = {}
    changed = False
    for kind in KINDS:
        # another writer committed first: _run_kind re-reads the table's progress and redoes the rest of the kind
        state = _KindProgress(KindRun(kind))
        runs[kind], kind_changed = retry.call(
            KIND_RACE, _run_kind, lake, engine, objects[kind], report, chunk_records, state
        )
        changed = changed or kind_changed
    gold_written: list[str] = []
    if gold:
        gold_written = _refresh_gold(lake, engine, changed)
    finished = datetime.now(UTC)
    result = BatchResult(run_id, started, finished, runs, gold_written)
    record_run(lake, result, interval_start, interval_end)
    return result


@dataclass
class _KindProgress:
    """One kind's accounting across its chunks and across the attempts of :data:`KIND_RACE` (a chunk committed
    by a failed attempt stays committed, and counted)."""

    run: KindRun
    changed: bool = False
    keys: set[str] = field(default_factory=set)
    written: list[np.ndarray] = field(default_factory=list)
    """``ind`` s the earlier chunks of this run merged: one sorted array per chunk (a union of all of them, or
    ``np.isin`` against it, costs the whole run's keys per chunk: quadratic on a backlog of many chunks)."""
    chunks: int = 0
    existed: bool = False
    """Whether silver existed when an attempt started (a chunk merged into an absent table creates it)."""
    bucketed: bool = True
    """Whether silver has the bucket column: its merge then says itself which rows changed (else they are
    counted by reading silver before the merge)."""


def _run_kind(
    lake: Lake, engine: Engine, objects: list[_Object], report: Progress, chunk_records: int, state: _KindProgress
) -> tuple[KindRun, bool]:
    """Read, clean and write one kind's pending records, chunk by chunk (:func:`pinpipe.batch.chunks.iter_chunks`:
    quarantine then the silver merge with the chunk's progress, per chunk); (its accounting, whether silver
    changed). Raises :class:`CommitConflictError` when another writer committed first (the caller re-runs it from
    the top: the committed progress it then reads makes the retry exact; ``state`` keeps what earlier attempts
    committed)."""
    kind = state.run.kind
    tps = sorted({(o.topic, o.partition) for o in objects})
    table = delta.open_table(lake, "silver", kind) if tps else None  # one load: progress and existence
    state.existed = state.existed or table is not None
    state.bucketed = table is None or buckets_of(table) is not None  # an absent table is created bucketed
    done: dict[str, int | None] = {}
    if table is not None:
        with delta.delta_errors("reading application transactions", table.table_uri):
            for t, p in tps:
                app = batch_app_id(t, p)
                version = table.transaction_version(app)
                done[app] = None if version is None else int(version)
    pending = pending_objects(objects, done)
    total = len(pending)
    read_objects = 0

    def on_object(n: int) -> None:
        nonlocal read_objects
        read_objects = n
        report(f"reading {kind}", n, total)

    for chunk in iter_chunks(lake, pending, chunk_records, on_object):
        _write_chunk(lake, engine, chunk, state)
        state.chunks += 1
        log.info(
            f"{kind}: chunk {state.chunks} committed ({read_objects}/{total} objects read, "
            f"{state.run.read} records so far)",
            extra={
                "fields": {
                    "kind": kind,
                    "chunk": state.chunks,
                    "objects_done": read_objects,
                    "objects_total": total,
                    "records": chunk.records.num_rows,
                    "read": state.run.read,
                }
            },
        )
        report(f"writing {kind}", read_objects, total)
    state.run.objects = len(state.keys)
    return state.run, state.changed


def _write_chunk(lake: Lake, engine: Engine, chunk: Chunk, state: _KindProgress) -> None:
    """Clean one chunk, write its quarantine then merge its winners with its progress, and add its accounting
    to ``state``. A winner whose ``ind`` an earlier chunk of the run merged, and that changes silver, changes a
    row this run wrote: it counts as collapsed (the earlier write was overtaken), not as a second update, as one
    merge of the whole run would count it."""
    run = state.run
    kind = run.kind
    cleaned = clean_records(engine, kind, chunk.records)
    winners = cleaned.silver.column("ind").to_numpy()
    # delta-rs's MERGE (a table without the bucket column) does not say which rows it changed: read silver first
    before = None if state.bucketed else changes_before(lake, kind, cleaned, engine, state.written)
    delta.write_quarantine(lake, kind, cleaned.quarantine)
    merged = delta.merge_silver(lake, kind, cleaned.silver, app_txns=chunk.ends, firsts=cleaned.firsts)
    if before is None:  # the merge compared the chunk's first records with silver and kept the updated keys
        overwritten = merged.changed_firsts or 0
        updated = merged.updated_keys if merged.updated_keys is not None else winners[:0]
        again = int(written_before(state.written, updated).sum()) if state.written and updated.size else 0
    else:
        first_changed, last_changed, again = before
        overwritten = merged.updated - last_changed + first_changed  # first records of the chunk that changed silver
    stats = cleaned.stats
    part = KindRun(kind)
    part.read, part.quarantined = stats.read, stats.quarantined
    part.inserted, part.updated = merged.inserted, merged.updated
    part.collapsed = merged.unchanged + stats.duplicates + stats.conflicts
    part.conflicts = stats.conflicts + overwritten  # changes within the chunk + first records changing silver
    check_balanced(part, merged.unchanged, merged.rows_before, merged.rows_after)
    run.read += part.read
    run.quarantined += part.quarantined
    run.inserted += part.inserted
    run.updated += part.updated - again
    run.collapsed += part.collapsed + again
    run.conflicts += part.conflicts
    for note, n in stats.notes.items():
        run.notes[note] = run.notes.get(note, 0) + n
    state.keys |= chunk.keys
    if winners.size:
        state.written.append(np.unique(winners.astype(np.int64)))
    state.changed = state.changed or merged.inserted > 0 or merged.updated > 0 or not state.existed
    state.existed = True


def check_balanced(run: KindRun, unchanged: int, rows_before: int, rows_after: int) -> None:
    if unchanged < 0 or not run.balanced or rows_after - rows_before != run.inserted:
        raise AccountingError(
            f"{run.kind}: records lost or doubled — {run.accounting_line()}; silver rows {rows_before} → {rows_after}",
            hint="report this with the run's log; the lake is consistent (commits are atomic), re-running is safe",
            kind=run.kind,
        )


def _refresh_gold(lake: Lake, engine: Engine, silver_changed: bool) -> list[str]:
    """Bring gold up to date: on DuckDB incrementally from what changed in silver since the gold state
    (:func:`pinpipe.batch.gold_state.refresh_gold`: whichever writer changed it), otherwise recomputed from whole
    silver when silver changed or a gold table is missing; only the tables that differ are overwritten."""
    if engine.name == "duckdb":
        return gold_state.refresh_gold(lake, engine.duckdb()).written
    names = list(gold_module.GOLD_TABLES)
    missing = [n for n in names if delta.table_version(lake, "gold", n) is None]
    if not silver_changed and not missing:
        return []
    silver: dict[Kind, Any] = {
        kind: delta.read_table(lake, "silver", kind, columns=gold_module.SILVER_COLUMNS[kind]) for kind in KINDS
    }
    if any(table is None for table in silver.values()):
        log.info(
            "gold not computed: silver is not complete yet",
            extra={"fields": {"missing": [k for k, t in silver.items() if t is None]}},
        )
        return []
    tables: dict[Kind, Any] = {k: t for k, t in silver.items() if t is not None}
    computed: dict[str, pa.Table] = gold_module.compute_gold_from_arrow(engine, tables)
    written: list[str] = []
    for name, table in computed.items():
        if retry.call(retry.COMMIT_RACE, delta.overwrite_if_changed, lake, table, "gold", name):
            written.append(name)  # a lost race re-reads the winner's rows: equal rows commit nothing
    return written


def record_run(lake: Lake, result: BatchResult, start: datetime | None, end: datetime | None) -> None:
    rows: dict[str, list[Any]] = {name: [] for name in RUNS_SCHEMA.names}
    for kind, run in result.kinds.items():
        values: dict[str, Any] = {
            "run_id": result.run_id,
            "path": "batch",
            "kind": kind,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "interval_start": start,
            "interval_end": end,
            "objects": run.objects,
            "read": run.read,
            "inserted": run.inserted,
            "updated": run.updated,
            "collapsed": run.collapsed,
            "conflicts": run.conflicts,
            "quarantined": run.quarantined,
            "notes": orjson.dumps(run.notes, option=orjson.OPT_SORT_KEYS).decode(),
        }
        for name, value in values.items():
            rows[name].append(value)
    delta.append(lake, pa.Table.from_pydict(rows, schema=RUNS_SCHEMA), *RUNS_TABLE)
