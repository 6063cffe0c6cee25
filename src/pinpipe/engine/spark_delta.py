"""Silver and quarantine merged by Delta Lake's own Spark MERGE (``delta-spark``), for sessions that have it: a
Databricks cluster, or a Spark with Delta's jars and session extension.

Who calls what: the Spark batch job (:func:`pinpipe.batch.spark_job._merge`) asks :func:`uses_delta_spark` per
run and, when it says yes, calls :func:`merge_with_delta_spark` per kind instead of the executor-writes +
delta-rs-commit path. The tables keep pinpipe's layout: they are created by delta-rs exactly as on DuckDB
(bucketed silver, ``delta.targetFileSize``), the MERGE source carries the ``bucket`` column
(``crc32(cast(ind as string)) % buckets``) and the MERGE condition names it, so Delta prunes by partition and
rewrites only the buckets it touches; one row per ``ind``; an identical row is not rewritten.

Exactly once, Delta's way (idempotent writes): the silver MERGE runs with the session confs
``spark.databricks.delta.write.txnAppId`` / ``txnVersion`` set to the run's first application transaction (the
topic-partition's next offset), so its rows and that progress land in one commit and Delta itself skips a MERGE
whose version it already holds. Delta records one application transaction per commit: the progress of any
further topic-partition of the kind is an empty append with the DataFrame writer options ``txnAppId`` /
``txnVersion`` right after. A crash between those commits leaves those partitions' records to be read again by
the next run, which merges them as identical rows (counted as collapsed duplicates): no row is lost or doubled.
Quarantine is a MERGE that inserts rows whose ``(topic, partition, offset)`` is absent.

Those two confs belong to the session, and the batch job runs its kinds on threads sharing one session: Delta
reads them when any write commits. So every Delta write of this module (quarantine MERGE, silver MERGE, the
progress appends) runs under one process-wide lock, :data:`DELTA_WRITES`: otherwise one kind's MERGE could
commit with another kind's application transaction, or with none after the other kind unset it.

Counts come from the MERGE's ``operationMetrics`` (``numTargetRowsInserted``, ``numTargetRowsUpdated``), the
conflicts with silver from a join of the first records with the table before the MERGE.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping
from typing import Any

from deltalake import DeltaTable as DeltaRsTable

from pinpipe.engine.spark import SparkEngine
from pinpipe.engine.spark_buckets import bucket_count, bucket_of, create_silver
from pinpipe.engine.spark_merge import MergeCounts
from pinpipe.errors import ConfigError
from pinpipe.lake.delta import delta_errors
from pinpipe.lake.store import Lake
from pinpipe.tables import QUARANTINE_SCHEMA, SILVER_BUCKET, SILVER_BUCKETS, SILVER_SCHEMAS, Kind

TXN_APP_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
DATABRICKS_CONF = "spark.databricks.clusterUsageTags.sparkVersion"
"""Set in every Databricks cluster's Spark configuration (the runtime version)."""
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_WRITES = threading.Lock()
"""Held around every Delta write of this module: the txn confs are session state shared by all threads."""


def delta_spark_importable() -> bool:
    """True if ``delta.tables`` (the ``delta-spark`` package, preinstalled on Databricks) can be imported."""
    try:
        return importlib.util.find_spec("delta.tables") is not None
    except ModuleNotFoundError:
        return False


def uses_delta_spark(engine: SparkEngine) -> bool:
    """Whether this run merges with Delta's own MERGE: ``spark.delta_writer`` ``"delta-spark"`` (an error if
    ``delta.tables`` is missing), ``"delta-rs"`` never, ``"auto"`` when ``delta.tables`` is importable and the
    session is a Databricks one or has Delta's session extension."""
    choice = engine.settings.delta_writer
    if choice == "delta-rs":
        return False
    importable = delta_spark_importable()
    if choice == "delta-spark":
        if not importable:
            raise ConfigError(
                "spark.delta_writer is delta-spark but delta.tables cannot be imported",
                hint="install delta-spark (with Delta's jars on the session), or set spark.delta_writer to auto",
                setting="spark.delta_writer",
            )
        return True
    conf = engine.session.conf
    on_delta = bool(conf.get(DATABRICKS_CONF, None)) or DELTA_EXTENSION in (conf.get("spark.sql.extensions", "") or "")
    return importable and on_delta


def _differs(schema_names: list[str]) -> str:
    return " OR ".join(f"(s.`{n}` IS DISTINCT FROM t.`{n}`)" for n in schema_names if n != "ind")


def create_quarantine(lake: Lake, kind: Kind) -> None:
    """Create ``quarantine/<kind>`` empty if it does not exist (delta-rs, a conflict-checked version 0)."""
    uri = lake.table_uri("quarantine", kind)
    with delta_errors("creating quarantine", uri):
        DeltaRsTable.create(
            uri,
            QUARANTINE_SCHEMA,
            mode="ignore",
            storage_options=lake.storage_options or None,
            raise_if_key_not_exists=False,
        )


def merge_with_delta_spark(
    engine: SparkEngine,
    lake: Lake,
    kind: Kind,
    quarantine: Any,
    winners: Any,
    first_rows: Any,
    app_txns: Mapping[str, int],
    winner_count: int,
) -> MergeCounts:
    """Quarantine, then silver, through ``delta.tables.DeltaTable`` (see the module docstring); ``winners`` hold
    one row per ``ind`` (``winner_count`` of them), ``first_rows`` the rows compared with silver for conflicts."""
    DeltaTable = importlib.import_module("delta.tables").DeltaTable  # delta-spark: present on Databricks
    F = engine.F
    spark = engine.session
    if quarantine.limit(1).count():  # as on the other paths: no quarantine table until a record is rejected
        create_quarantine(lake, kind)
        key = "t.topic = s.topic AND t.`partition` = s.`partition` AND t.`offset` = s.`offset`"
        rejected = DeltaTable.forPath(spark, lake.table_uri("quarantine", kind)).alias("t")
        with DELTA_WRITES:  # no other kind's txn confs may be set while this commits
            rejected.merge(
                quarantine.dropDuplicates(["topic", "partition", "offset"]).alias("s"), key
            ).whenNotMatchedInsertAll().execute()

    create_silver(lake, kind)
    silver_path = lake.table_uri("silver", kind)
    with delta_errors("opening", silver_path):
        buckets = bucket_count(DeltaRsTable(silver_path, storage_options=lake.storage_options or None))
    buckets = buckets or SILVER_BUCKETS
    names = SILVER_SCHEMAS[kind].names
    target = DeltaTable.forPath(spark, silver_path)
    firsts = first_rows.select(*names).withColumn(SILVER_BUCKET, bucket_of(F, buckets)).alias("s")
    table = target.toDF().alias("t")
    on = (F.col("t.ind") == F.col("s.ind")) & (F.col(f"t.{SILVER_BUCKET}") == F.col(f"s.{SILVER_BUCKET}"))
    changed_firsts = firsts.join(table, on, "inner").filter(F.expr(_differs(names))).count()

    source = winners.select(*names).withColumn(SILVER_BUCKET, bucket_of(F, buckets)).alias("s")
    txns = sorted(app_txns.items())
    with DELTA_WRITES:
        if txns:
            spark.conf.set(TXN_APP_CONF, txns[0][0])
            spark.conf.set(TXN_VERSION_CONF, str(int(txns[0][1])))
        try:
            (
                target.alias("t")
                .merge(source, f"t.ind = s.ind AND t.`{SILVER_BUCKET}` = s.`{SILVER_BUCKET}`")
                .whenMatchedUpdateAll(condition=_differs(names))
                .whenNotMatchedInsertAll()
                .execute()
            )
            metrics = target.history(1).select("operationMetrics").collect()[0][0] or {}
        finally:
            if txns:
                spark.conf.unset(TXN_APP_CONF)
                spark.conf.unset(TXN_VERSION_CONF)
        for app, version in txns[1:]:
            (
                source.limit(0)
                .write.format("delta")
                .mode("append")
                .option("txnAppId", app)
                .option("txnVersion", str(int(version)))
                .save(silver_path)
            )
    inserted = int(metrics.get("numTargetRowsInserted", 0) or 0)
    updated = int(metrics.get("numTargetRowsUpdated", 0) or 0)
    return MergeCounts(inserted, updated, winner_count - inserted - updated, int(changed_firsts))
