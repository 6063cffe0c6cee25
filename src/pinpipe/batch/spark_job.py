"""The batch job on Spark: executors read the landed objects, clean, merge silver and compute gold.

Same contract as :func:`pinpipe.batch.job.run_batch` (which calls :func:`run_batch_on_spark` for the Spark
engine): the same pending objects and committed positions, the same cleaning program
(:func:`pinpipe.clean.rules.clean_frame`), the same Delta tables, application transactions, accounting and run
log. What runs where:

- the driver lists the landed keys, reads the committed positions, and builds a DataFrame of keys;
- executor tasks fetch their objects through the object store and parse them
  (:mod:`pinpipe.engine.spark_landed`); stage 2 and the winner per ``ind`` are Spark operators;
- executors write the quarantine and silver Parquet files, the driver commits them with delta-rs
  (:mod:`pinpipe.engine.spark_merge`: quarantine first, then silver with the progress in the same commit);
- gold: executors read silver's files, Spark runs the gold queries; the nine small results come to the driver,
  which overwrites the gold tables that changed.

What passes through the driver: object keys, the tables' file lists and statistics, counts, and the gold rows
(aggregates). Silver is bucketed as on DuckDB (:mod:`pinpipe.engine.spark_buckets`: each task merges whole
buckets); a table laid out some other way is merged by delta-rs on the driver instead (:func:`_merge_on_driver`):
then the batch's silver and quarantine rows do pass through it.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from pinpipe.batch import gold as gold_module
from pinpipe.batch.job import (
    BatchResult,
    KindRun,
    Progress,
    check_balanced,
    landed_objects,
    pending_objects,
    record_run,
)
from pinpipe.clean import normalise_silver
from pinpipe.clean.parse import raw_schema
from pinpipe.clean.rules import NOTES, clean_frame
from pinpipe.engine.spark import SparkEngine
from pinpipe.engine.spark_buckets import is_bucketed, merge_buckets
from pinpipe.engine.spark_delta import merge_with_delta_spark, uses_delta_spark
from pinpipe.engine.spark_io import LakeRef
from pinpipe.engine.spark_landed import KEYS_SCHEMA, read_landed_task, stage1_schema
from pinpipe.engine.spark_merge import MergeCounts, insert_absent, merge_by_ind, open_table, read_files, spark_schema
from pinpipe.engine.spark_merge import supported as merge_supported
from pinpipe.lake import delta
from pinpipe.lake.data_files import table_files
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS, QUARANTINE_SCHEMA, SILVER_SCHEMAS, Kind, batch_app_id

log = logging.getLogger("pinpipe.batch.spark_job")

QUARANTINE_KEY = ["topic", "partition", "offset"]


def run_batch_on_spark(
    lake: Lake,
    engine: SparkEngine,
    prefix: str,
    *,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    progress: Progress | None = None,
    gold: bool = True,
) -> BatchResult:
    """One batch run over ``lake`` with the work on Spark's executors (see the module docstring)."""
    started = datetime.now(UTC)
    run_id = uuid.uuid4().hex
    report = progress or (lambda step, done, total: None)
    ref = LakeRef.of(lake)
    objects = landed_objects(lake, prefix)
    runs: dict[Kind, KindRun] = {kind: KindRun(kind) for kind in KINDS}
    work: dict[Kind, list[Any]] = {}
    for kind in KINDS:
        tps = sorted({(o.topic, o.partition) for o in objects[kind]})
        done = delta.txn_versions(lake, kind, [batch_app_id(t, p) for t, p in tps]) if tps else {}
        pending = pending_objects(objects[kind], done)
        if pending:
            work[kind] = pending
    # the kinds are independent (their own tables): their Spark jobs run side by side, so that the driver's
    # planning and commits of one overlap the executors' work for another
    changed = False
    with ThreadPoolExecutor(max_workers=max(1, len(work)), thread_name_prefix="pinpipe-batch") as pool:
        futures = {
            kind: pool.submit(_run_kind, engine, lake, ref, kind, pending, runs[kind]) for kind, pending in work.items()
        }
        for n, kind in enumerate(futures, start=1):
            changed = futures[kind].result() or changed
            report("cleaning and writing", n, len(futures))
    gold_written: list[str] = []
    if gold:
        gold_written = _refresh_gold(lake, engine, ref, changed)
    finished = datetime.now(UTC)
    result = BatchResult(run_id, started, finished, runs, gold_written)
    record_run(lake, result, interval_start, interval_end)
    return result


def _run_kind(engine: SparkEngine, lake: Lake, ref: LakeRef, kind: Kind, pending: list[Any], run: KindRun) -> bool:
    """Clean and write one kind's pending objects; True if silver changed (or was created)."""
    F = engine.F
    rows = [(obj.key, obj.topic, obj.partition, obj.start, position) for obj, position in pending]
    keys = engine.session.createDataFrame(rows, spark_schema(KEYS_SCHEMA))
    keys = keys.repartition(max(1, min(len(rows), engine.parallelism * 2)))
    stage1 = keys.mapInArrow(read_landed_task(ref, kind), spark_schema(stage1_schema(kind))).persist()
    cleaned: Any = None
    try:
        progress = stage1.groupBy("topic", "partition").agg(
            F.max("offset").alias("last"),
            F.countDistinct("source").alias("objects"),
            F.count(F.lit(1)).alias("read"),
            F.sum(F.col("_reason").isNotNull().cast("long")).alias("rejected"),
        )
        ends: dict[str, int] = {}
        for row in progress.collect():
            ends[batch_app_id(row["topic"], row["partition"])] = int(row["last"]) + 1
            run.objects += int(row["objects"])
            run.read += int(row["read"])
            run.quarantined += int(row["rejected"])
        if run.read == 0:
            return False
        good = stage1.filter(F.col("_reason").isNull()).select(*raw_schema(kind).names)
        cleaned = clean_frame(engine, kind, good).df.persist()
        counts = _clean_counts(engine, kind, cleaned)
        run.quarantined += counts["rejected"]
        run.notes = {name: counts[f"_note{i}"] for i, name in enumerate(NOTES[kind]) if counts[f"_note{i}"]}
        duplicates = counts["valid"] - counts["winners"] - counts["conflicts"]
        quarantine = _quarantine(engine, stage1, cleaned)
        silver_names = SILVER_SCHEMAS[kind].names
        winners = cleaned.filter(F.col("_win")).select(*silver_names)
        firsts = cleaned.filter(F.col("_first")).select(*silver_names)
        first_rows = winners.join(firsts.select("ind"), "ind", "left_anti").unionByName(firsts)
        before = delta.table_version(lake, "silver", kind)
        rows_before = delta.row_count(lake, "silver", kind) or 0
        bounds = (counts["winners"], counts["lo"], counts["hi"])
        offsets = (min(position for _, position in pending), max(ends.values()) - 1)
        merged = _merge(engine, lake, ref, kind, quarantine, winners, firsts, first_rows, ends, bounds, offsets)
    finally:
        if cleaned is not None:
            cleaned.unpersist()
        stage1.unpersist()
    run.inserted, run.updated = merged.inserted, merged.updated
    run.collapsed = merged.unchanged + duplicates + counts["conflicts"]
    run.conflicts = counts["conflicts"] + merged.changed_firsts
    check_balanced(run, merged.unchanged, rows_before, (delta.row_count(lake, "silver", kind) or 0))
    return merged.inserted > 0 or merged.updated > 0 or before is None


def _clean_counts(engine: SparkEngine, kind: Kind, cleaned: Any) -> dict[str, Any]:
    """One aggregate over the stage-2 rows: rejected, valid, winners, conflicts, each note (good rows) and the
    winners' lowest and highest ``ind`` (``lo``, ``hi``: None without winners)."""
    F = engine.F
    good = F.col("reason").isNull()

    def total(cond: Any) -> Any:
        return F.sum(F.when(cond, F.lit(1)).otherwise(F.lit(0)))

    aggs = [
        total(~good).alias("rejected"),
        total(good).alias("valid"),
        total(F.col("_win")).alias("winners"),
        F.min(F.when(F.col("_win"), F.col("ind"))).alias("lo"),
        F.max(F.when(F.col("_win"), F.col("ind"))).alias("hi"),
        total(F.col("_differs")).alias("conflicts"),
        *(
            total(good & F.coalesce(F.col(f"_note{i}"), F.lit(False))).alias(f"_note{i}")
            for i in range(len(NOTES[kind]))
        ),
    ]
    row = cleaned.agg(*aggs).collect()[0]
    return {
        name: (int(row[name]) if row[name] is not None else (None if name in ("lo", "hi") else 0))
        for name in row.asDict()
    }


def _quarantine(engine: SparkEngine, stage1: Any, cleaned: Any) -> Any:
    """The run's quarantine rows (``QUARANTINE_SCHEMA``): stage-1 rejects and stage-2 (semantic) ones, whose
    line comes from stage 1."""
    F = engine.F
    first = stage1.filter(F.col("_reason").isNotNull()).select(
        "topic", "partition", "offset", "source", F.col("_reason").alias("reason"), F.col("_line").alias("raw")
    )
    semantic = (
        cleaned.filter(F.col("reason").isNotNull())
        .select("topic", "partition", "offset", "reason")
        .join(stage1.select("topic", "partition", "offset", "source", F.col("_line").alias("raw")), QUARANTINE_KEY)
        .select(*QUARANTINE_SCHEMA.names)
    )
    return first.unionByName(semantic)


def _merge(
    engine: SparkEngine,
    lake: Lake,
    ref: LakeRef,
    kind: Kind,
    quarantine: Any,
    winners: Any,
    firsts: Any,
    first_rows: Any,
    ends: dict[str, int],
    bounds: tuple[int, int | None, int | None],
    offsets: tuple[int, int],
) -> MergeCounts:
    """Quarantine first (insert-if-absent), then silver with the progress ``ends`` in the same commit: by bucket
    (:func:`~pinpipe.engine.spark_buckets.merge_buckets`) for a bucketed or a new table, by ``ind`` range for a
    table created before silver carried the bucket column, on the driver for any other layout; by Delta's own
    MERGE when the session has it (:mod:`pinpipe.engine.spark_delta`, Databricks)."""
    if uses_delta_spark(engine):
        return merge_with_delta_spark(engine, lake, kind, quarantine, winners, first_rows, ends, bounds[0])
    schema = SILVER_SCHEMAS[kind]
    silver = open_table(lake, "silver", kind)
    bucketed = silver is None or is_bucketed(silver, kind)
    if not (bucketed or merge_supported(silver, schema)) or not merge_supported(
        open_table(lake, "quarantine", kind), QUARANTINE_SCHEMA
    ):
        return _merge_on_driver(engine, lake, kind, quarantine, winners, first_rows, ends)
    insert_absent(engine, lake, ref, ("quarantine", kind), QUARANTINE_SCHEMA, quarantine, QUARANTINE_KEY, offsets)
    if bucketed:
        return merge_buckets(engine, lake, ref, kind, winners, firsts, ends)
    return merge_by_ind(engine, lake, ref, ("silver", kind), schema, winners, first_rows, ends, bounds)


def _merge_on_driver(
    engine: SparkEngine,
    lake: Lake,
    kind: Kind,
    quarantine: Any,
    winners: Any,
    first_rows: Any,
    ends: dict[str, int],
) -> MergeCounts:
    """The fallback for tables laid out with partition columns: the rows come to the driver and
    :mod:`pinpipe.lake.delta` merges them (its layout, its merge)."""
    log.info("silver or quarantine has partition columns: merging on the driver", extra={"fields": {"kind": kind}})
    silver = normalise_silver(kind, engine.to_arrow(winners))
    firsts = normalise_silver(kind, engine.to_arrow(first_rows))
    overwritten = delta.count_changed(lake, kind, firsts, engine.duckdb())
    delta.write_quarantine(lake, kind, engine.to_arrow(quarantine))
    merged = delta.merge_silver(lake, kind, silver, app_txns=ends)
    return MergeCounts(merged.inserted, merged.updated, merged.unchanged, overwritten)


def _refresh_gold(lake: Lake, engine: SparkEngine, ref: LakeRef, silver_changed: bool) -> list[str]:
    """Recompute gold on the executors when silver changed or a gold table is missing; overwrite only the tables
    that differ (the driver receives the nine aggregates)."""
    names = list(gold_module.GOLD_TABLES)
    missing = [n for n in names if delta.table_version(lake, "gold", n) is None]
    if not silver_changed and not missing:
        return []
    tables = {kind: open_table(lake, "silver", kind) for kind in KINDS}
    if any(dt is None for dt in tables.values()):
        log.info(
            "gold not computed: silver is not complete yet",
            extra={"fields": {"missing": [k for k, t in tables.items() if t is None]}},
        )
        return []
    frames: dict[Kind, Any] = {}
    try:
        for kind, dt in tables.items():
            schema = pa.schema([SILVER_SCHEMAS[kind].field(c) for c in gold_module.SILVER_COLUMNS[kind]])
            frames[kind] = read_files(engine, ref, ("silver", kind), table_files(dt), schema).persist()
        computed = gold_module.compute_gold(engine, frames)
    finally:
        for frame in frames.values():
            frame.unpersist()
    return [name for name, table in computed.items() if delta.overwrite_if_changed(lake, table, "gold", name)]
