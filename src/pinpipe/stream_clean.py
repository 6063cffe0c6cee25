"""The stream worker's cleaning: :func:`pinpipe.clean.clean_records`, with each kind's SQL built once.

Why: on SQLFrame, building the cleaning DataFrame and generating its SQL (sqlglot expression copies) costs
0.2–2 s per call whatever the batch size, while running the SQL on DuckDB takes milliseconds. That fixed cost is
fine for a daily batch and fatal for sub-second micro-batches. :class:`CompiledCleaner` builds the cleaning
frame of a kind once, over a DuckDB table with a fixed name (``__pinpipe_stream_<kind>``), keeps its SQL, and for
every later batch replaces that table's rows and runs the SQL again. Reusing one table name per kind also keeps
the long-lived DuckDB session from accumulating a table per batch.

The stages and their order are exactly :func:`pinpipe.clean.clean_records`' (stage 1 :func:`parse_records`,
stage 2 :func:`clean_frame`, then winners, conflicts, notes and quarantine rows); the unit tests compare both on
dirty generated batches so they cannot drift apart. With a non-DuckDB engine it simply calls ``clean_records``.

Who calls what: :class:`pinpipe.stream.StreamWorker` calls :meth:`CompiledCleaner.warm_up` once (from the thread
that owns the engine: building uses the SQLFrame session), then :meth:`CompiledCleaner.clean` per kind and batch —
different kinds from different threads at once is fine (each kind has its own DuckDB cursor, and DuckDB runs
queries without the GIL), one kind from two threads at once is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.clean import CleanResult, CleanStats, RawRecord, clean_records, normalise_silver
from pinpipe.clean.parse import parse_records, raw_schema
from pinpipe.clean.records import records_table
from pinpipe.clean.rules import clean_frame
from pinpipe.engine import DuckDBEngine, Engine
from pinpipe.tables import QUARANTINE_SCHEMA, SILVER_SCHEMAS, Kind


class CompiledCleaner:
    """``clean(kind, records)`` ≡ ``clean_records(engine, kind, records)``, with the SQL compiled once per kind."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._compiled: dict[Kind, tuple[list[str], tuple[str, ...]]] = {}
        self._cursors: dict[Kind, Any] = {}

    def clean(self, kind: Kind, records: Sequence[RawRecord]) -> CleanResult:
        engine = self.engine
        if not isinstance(engine, DuckDBEngine):
            return clean_records(engine, kind, records)
        conn = self._cursor(engine, kind)
        table = records_table(records)
        parsed = parse_records(kind, table, conn)
        semantic = QUARANTINE_SCHEMA.empty_table()
        notes: dict[str, int] = {}
        duplicates = conflicts = 0
        silver = SILVER_SCHEMAS[kind].empty_table()
        if parsed.rows.num_rows:
            out, note_names = self._run(conn, kind, parsed.rows)
            bad = pc.is_valid(out.column("reason"))
            if pc.any(bad).as_py():
                semantic = _quarantine_rows(table, out.filter(bad))
            good = out.filter(pc.invert(bad))
            silver = normalise_silver(kind, good.filter(good.column("_win")))
            conflicts = int(pc.sum(good.column("_differs").cast(pa.int64())).as_py() or 0)
            duplicates = good.num_rows - silver.num_rows - conflicts
            for i, name in enumerate(note_names):
                count = int(pc.sum(good.column(f"_note{i}").cast(pa.int64())).as_py() or 0)
                if count:
                    notes[name] = count
        quarantine = pa.concat_tables([parsed.quarantine, semantic]) if semantic.num_rows else parsed.quarantine
        quarantine = _strip_terminators(quarantine)
        if quarantine.num_rows > 1:
            quarantine = quarantine.sort_by(
                [("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
            )
        stats = CleanStats(
            read=table.num_rows,
            valid=table.num_rows - quarantine.num_rows,
            quarantined=quarantine.num_rows,
            duplicates=duplicates,
            conflicts=conflicts,
            notes=notes,
        )
        return CleanResult(silver, quarantine, stats)

    def warm_up(self, kinds: Sequence[Kind]) -> None:
        """Build the SQL of ``kinds`` now (a second or two each) so the first micro-batch does not wait for it."""
        if isinstance(self.engine, DuckDBEngine):
            for kind in kinds:
                self._cursor(self.engine, kind)

    def _statements(self, engine: DuckDBEngine, kind: Kind) -> tuple[list[str], tuple[str, ...]]:
        compiled = self._compiled.get(kind)
        if compiled is None:
            frame = engine.frame(raw_schema(kind).empty_table(), _table_name(kind))
            cleaned = clean_frame(engine, kind, frame)
            statements = cleaned.df.sql(dialect="duckdb", optimize=False, pretty=False, as_list=True)
            compiled = self._compiled[kind] = (list(statements), tuple(cleaned.notes))
        return compiled

    def _cursor(self, engine: DuckDBEngine, kind: Kind) -> Any:
        """A DuckDB cursor of the engine's database for ``kind`` alone, so kinds can be cleaned in parallel."""
        cursor = self._cursors.get(kind)
        if cursor is None:
            self._statements(engine, kind)
            cursor = self._cursors[kind] = engine.conn.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def _run(self, conn: Any, kind: Kind, rows: pa.Table) -> tuple[pa.Table, tuple[str, ...]]:
        statements, note_names = self._compiled[kind]
        conn.register("__pinpipe_stream_rows", rows)  # replace the rows of the fixed-name table
        try:
            conn.execute(f'CREATE OR REPLACE TABLE "{_table_name(kind)}" AS SELECT * FROM __pinpipe_stream_rows')
        finally:
            conn.unregister("__pinpipe_stream_rows")
        for sql in statements[:-1]:
            conn.execute(sql)
        return conn.sql(statements[-1]).to_arrow_table(), note_names


def _table_name(kind: Kind) -> str:
    return f"__pinpipe_stream_{kind}"


def _quarantine_rows(records: pa.Table, rejected: pa.Table) -> pa.Table:
    """Quarantine rows for records rejected by stage 2 (the same columns ``clean_records`` builds)."""
    taken = records.take(rejected.column("_row").cast(pa.int64()))
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
    if quarantine.num_rows == 0:
        return quarantine
    raw = pc.replace_substring_regex(quarantine.column("raw"), pattern="\n$", replacement="")
    return quarantine.set_column(quarantine.schema.get_field_index("raw"), QUARANTINE_SCHEMA.field("raw"), raw)
