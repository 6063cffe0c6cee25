"""Cleaning shared by the batch and the stream paths: raw records in, silver rows and quarantined rows out.

Contract (both paths call exactly this; keep names and semantics)::

    @dataclass(frozen=True)
    class CleanResult:
        silver: pa.Table      # exactly tables.SILVER_SCHEMAS[kind], ONE row per ind: the last record
                              # (highest (partition, offset)) of the batch wins
        quarantine: pa.Table  # tables.QUARANTINE_SCHEMA rows, reasons per clean/quarantine.py
        stats: CleanStats     # read, valid, quarantined, duplicates (identical re-sends collapsed in the batch),
                              # conflicts (same ind, different cleaned content), notes: dict[str, int]
                              # ("placeholder:<column>", "follower_count_unparsed", ...)

    def clean_records(engine: Engine, kind: Kind, records: Sequence[RawRecord]) -> CleanResult

Delta side (:mod:`pinpipe.delta`)::

    @dataclass(frozen=True)
    class MergeStats: inserted: int; updated: int; unchanged: int; version: int | None  # None: no commit

    merge_silver(lake, kind, silver: pa.Table, app_txns: Mapping[str, int] | None = None) -> MergeStats
        # upsert by ind into <lake>/silver/<kind>; identical rows untouched; the commit carries the application
        # transactions {app_id: version} so progress and rows land atomically; creates the table on first use
    write_quarantine(lake, kind, rows: pa.Table) -> int   # insert-if-absent by (topic, partition, offset)
    txn_version(lake, kind, app_id) -> int | None          # last committed version of app_id on silver/<kind>
    read_table(lake, *parts) -> pa.Table | None            # read_table(lake, "silver", "pin")

App ids name one writer of one topic-partition: ``pinpipe-batch:<topic>:<partition>`` and
``pinpipe-stream:<topic>:<partition>``; the version is the next offset after the last record included, so a
restarted writer resumes from ``txn_version`` and skips what silver already holds (delta-rs does not enforce
monotonic versions: callers check ``>=``).
"""

from pinpipe.clean.records import RawRecord

__all__ = ["RawRecord"]
