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
        firsts: pa.Table | None = None  # first good record of each ind with several; first_rows() = the batch's
                              # first record per ind, to compare with silver (delta.count_changed)

    def clean_records(engine: Engine, kind: Kind, records: Sequence[RawRecord]) -> CleanResult

Delta side (:mod:`pinpipe.lake.delta`)::

    @dataclass(frozen=True)
    class MergeStats: inserted: int; updated: int; unchanged: int; version: int | None  # None: no commit

    merge_silver(lake, kind, silver: pa.Table, app_txns: Mapping[str, int] | None = None) -> MergeStats
        # upsert by ind into <lake>/silver/<kind>; identical rows untouched; the commit carries the application
        # transactions {app_id: version} so progress and rows land atomically; creates the table on first use
    write_quarantine(lake, kind, rows: pa.Table) -> int   # insert-if-absent by (topic, partition, offset)
    txn_version(lake, kind, app_id) -> int | None          # last committed version of app_id on silver/<kind>
    count_changed(lake, kind, rows, conn) -> int           # rows whose ind silver holds with other content: call
                                                           # with first_rows() before merging; conflicts of a
                                                           # batch = stats.conflicts + that
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

from pinpipe.clean.parse import parse_records, raw_schema
from pinpipe.clean.records import RawRecord, records_table, take_rows
from pinpipe.clean.rules import NOTES, clean_table
from pinpipe.engine import Engine
from pinpipe.tables import KINDS, QUARANTINE_SCHEMA, SILVER_SCHEMAS, Kind

__all__ = ["CleanResult", "CleanStats", "RawRecord", "clean_records", "normalise_silver", "prepare_cleaning"]


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
    firsts: pa.Table | None = None
    """For each ``ind`` with several good records in the batch, its first one (``SILVER_SCHEMAS[kind]``): with
    ``silver``, :meth:`first_rows` — what to compare with the rows already in silver to count conflicts across
    batches (``stats.conflicts`` counts those within the batch)."""

    def first_rows(self) -> pa.Table:
        """The first good record of each ``ind`` of the batch (silver schema): the one whose predecessor is the
        row silver holds already. Callers count ``delta.count_changed(lake, kind, first_rows())`` as conflicts."""
        if self.firsts is None or self.firsts.num_rows == 0:
            return self.silver
        single = pc.invert(pc.is_in(self.silver.column("ind"), value_set=self.firsts.column("ind")))
        return pa.concat_tables([self.silver.filter(single), self.firsts])


def normalise_silver(kind: Kind, table: pa.Table) -> pa.Table:
    """``table``'s silver columns cast to exactly ``SILVER_SCHEMAS[kind]`` (engines differ in timestamp zones and
    integer widths), sorted by ``ind``."""
    out = _cast_silver(kind, table)
    return out.sort_by("ind") if out.num_rows > 1 else out


def _cast_silver(kind: Kind, table: pa.Table) -> pa.Table:
    from pinpipe.lake.data_files import cast_to

    return cast_to(table, SILVER_SCHEMAS[kind])


def _count(mask: Any) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def clean_records(engine: Engine, kind: Kind, records: Sequence[RawRecord] | pa.Table) -> CleanResult:
    """Clean one batch of ``kind`` records (RawRecords, or a :data:`~pinpipe.clean.records.RECORDS_SCHEMA`
    table): silver rows (one per ``ind``, the last by ``(partition, offset)`` wins), quarantined rows with their
    reasons (raw shape first, then semantics), and the counts.

    Called by the batch job once per kind and run, and by the stream worker once per kind and micro-batch: after
    the first call on an engine, a call costs the DuckDB queries and Arrow work on its rows only (the cleaning
    program's SQL is generated once per engine and kind, see :meth:`Engine.collect`)."""
    table = records if isinstance(records, pa.Table) else records_table(records)
    parsed = parse_records(kind, table, engine.duckdb())
    quarantine = parsed.quarantine
    notes: dict[str, int] = {}
    duplicates = conflicts = 0
    silver = firsts = SILVER_SCHEMAS[kind].empty_table()
    if parsed.rows.num_rows:
        out = clean_table(engine, kind, parsed.rows)
        del parsed  # the typed rows are not needed any more: free them before the silver copy
        good = pc.is_null(out.column("reason"))
        rejected = out.num_rows - _count(good)
        if rejected:
            semantic = _quarantine_rows(table, out.select(["_row", "reason"]).filter(pc.invert(good)))
            quarantine = pa.concat_tables([quarantine, semantic])
        # the winners (``_win`` implies a good row), sorted by ind, in one take
        winners = pc.indices_nonzero(out.column("_win"))
        order = pc.sort_indices(out.column("ind").take(winners))
        silver = _cast_silver(kind, out.select(SILVER_SCHEMAS[kind].names).take(winners.take(order)))
        firsts = _cast_silver(kind, out.select(SILVER_SCHEMAS[kind].names).filter(out.column("_first")))
        conflicts = _count(out.column("_differs"))  # ``_differs`` implies a good row
        duplicates = out.num_rows - rejected - silver.num_rows - conflicts
        for i, name in enumerate(NOTES[kind]):
            count = _count(pc.and_kleene(out.column(f"_note{i}"), good))
            if count:
                notes[name] = count
        del out
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
    return CleanResult(silver, quarantine, stats, firsts)


def prepare_cleaning(engine: Engine, kinds: Sequence[Kind] = KINDS) -> None:
    """Build the cleaning program of ``kinds`` on ``engine`` now (on DuckDB, generating its SQL takes up to a
    second per kind), so that the first :func:`clean_records` call — a stream worker's first micro-batch — does
    not pay for it."""
    for kind in kinds:
        clean_table(engine, kind, raw_schema(kind).empty_table())


def _quarantine_rows(records: pa.Table, rejected: pa.Table) -> pa.Table:
    rows = rejected.column("_row").cast(pa.int64())
    taken = take_rows(records, rows)
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
