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

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.clean.parse import parse_records
from pinpipe.clean.records import RawRecord, records_table
from pinpipe.clean.rules import clean_frame
from pinpipe.engine import Engine
from pinpipe.tables import QUARANTINE_SCHEMA, SILVER_SCHEMAS, Kind

__all__ = ["CleanResult", "CleanStats", "RawRecord", "clean_records", "normalise_silver"]


@dataclass(frozen=True)
class CleanStats:
    """Counts of one :func:`clean_records` call. ``read = valid + quarantined`` and
    ``valid = len(silver) + duplicates + conflicts``: ``duplicates`` are good records identical (after cleaning)
    to the winner of their ``ind`` — re-sends collapsed in the batch — and ``conflicts`` are good records that
    differ from it and lost. ``notes`` counts data-quality fixes on good records (``empty:<col>``,
    ``placeholder:<col>``, ``follower_count_unparsed``), only the non-zero ones."""

    read: int
    valid: int
    quarantined: int
    duplicates: int
    conflicts: int
    notes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CleanResult:
    silver: pa.Table
    quarantine: pa.Table
    stats: CleanStats


def normalise_silver(kind: Kind, table: pa.Table) -> pa.Table:
    """``table``'s silver columns cast to exactly ``SILVER_SCHEMAS[kind]`` (engines differ in timestamp zones and
    integer widths), sorted by ``ind``."""
    schema = SILVER_SCHEMAS[kind]
    columns = []
    for f in schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC")
        columns.append(col.cast(f.type))
    out = pa.Table.from_arrays(columns, schema=schema)
    return out.sort_by("ind") if out.num_rows > 1 else out


def clean_records(engine: Engine, kind: Kind, records: Sequence[RawRecord] | pa.Table) -> CleanResult:
    """Clean one batch of ``kind`` records (RawRecords, or a :data:`~pinpipe.clean.records.RECORDS_SCHEMA`
    table): silver rows (one per ``ind``, the last by ``(partition, offset)`` wins), quarantined rows with their
    reasons (raw shape first, then semantics), and the counts."""
    table = records if isinstance(records, pa.Table) else records_table(records)
    parsed = parse_records(kind, table)
    semantic = QUARANTINE_SCHEMA.empty_table()
    notes: dict[str, int] = {}
    duplicates = conflicts = 0
    silver = SILVER_SCHEMAS[kind].empty_table()
    if parsed.rows.num_rows:
        cleaned = clean_frame(engine, kind, engine.frame(parsed.rows))
        out = engine.to_arrow(cleaned.df)
        bad = pc.is_valid(out.column("reason"))
        if pc.any(bad).as_py():
            rejected = out.filter(bad)
            semantic = _quarantine_rows(table, rejected)
        good = out.filter(pc.invert(bad))
        win = good.column("_win")
        silver = normalise_silver(kind, good.filter(win))
        differs = pc.sum(good.column("_differs").cast(pa.int64())).as_py() or 0
        conflicts = int(differs)
        duplicates = good.num_rows - silver.num_rows - conflicts
        for i, name in enumerate(cleaned.notes):
            count = int(pc.sum(good.column(f"_note{i}").cast(pa.int64())).as_py() or 0)
            if count:
                notes[name] = count
    quarantine = pa.concat_tables([parsed.quarantine, semantic]) if semantic.num_rows else parsed.quarantine
    quarantine = _strip_terminators(quarantine)
    if quarantine.num_rows > 1:
        quarantine = quarantine.sort_by([("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")])
    stats = CleanStats(
        read=table.num_rows,
        valid=table.num_rows - quarantine.num_rows,
        quarantined=quarantine.num_rows,
        duplicates=duplicates,
        conflicts=conflicts,
        notes=notes,
    )
    return CleanResult(silver, quarantine, stats)


def _quarantine_rows(records: pa.Table, rejected: pa.Table) -> pa.Table:
    rows = rejected.column("_row").cast(pa.int64())
    taken = records.take(rows)
    return pa.Table.from_arrays(
        [
            taken.column("topic"),
            taken.column("partition"),
            taken.column("offset"),
            taken.column("source"),
            rejected.column("reason").cast(pa.string()),
            taken.column("line").cast(pa.string()),
        ],
        schema=QUARANTINE_SCHEMA,
    )


def _strip_terminators(quarantine: pa.Table) -> pa.Table:
    """Landed lines keep their ``\n`` terminator in the records table; the quarantined ``raw`` does not."""
    if quarantine.num_rows == 0:
        return quarantine
    raw: Any = pc.replace_substring_regex(quarantine.column("raw"), pattern="\n$", replacement="")
    return quarantine.set_column(quarantine.schema.get_field_index("raw"), QUARANTINE_SCHEMA.field("raw"), raw)
