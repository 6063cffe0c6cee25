"""Stage 1 of cleaning: JSON lines → typed raw columns, and raw-shape quarantine.

A line becomes a row of its table's *raw* schema (:data:`RAW_ARROW_TYPES`: ``int``/``flag`` → int64, ``float`` →
float64, ``text``/``datetime`` → string) or a quarantined record whose reason is exactly what the API would have
answered (:func:`pinpipe.tables.validate_raw`), or ``invalid_json``.

Speed: the common case is decided in bulk by DuckDB's JSON functions (one query over all lines, on the engine's
DuckDB connection); only lines that the bulk check does not clearly accept are parsed again in Python with orjson
and judged by :func:`~pinpipe.tables.check_raw` (``validate_raw`` with the typed values) itself. The bulk check is conservative — it accepts a line only when every
value already has its canonical JSON type (a digit string for an ``int`` column, ``true`` for a flag, a number in
a text column, a duplicated key, a float orjson would not read, … all go the Python way) — so the reasons, and
the values, are always those of the Python rules.

Both ways give the same verdict and the same values because both follow the one definition of each column's
type and range in :mod:`pinpipe.tables` (:func:`~pinpipe.tables.check_raw`): the SQL accepts only JSON numbers
whose ``TRY_CAST`` to BIGINT/DOUBLE succeeds (int64, finite doubles) and strings in string columns; every other
line — numeral strings of any length, integers beyond int64, ``NaN``/``Infinity`` literals, control characters,
nested values — is judged in Python by ``check_raw``, which never raises. So no value in any column can make
this stage fail: a line is a typed row or a quarantined record with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.clean.quarantine import INVALID_JSON
from pinpipe.clean.records import take_rows
from pinpipe.engine.duckdb import query_arrow
from pinpipe.tables import QUARANTINE_SCHEMA, RAW_TABLES, Kind, check_raw
from pinpipe.values import RawType

RAW_ARROW_TYPES: dict[RawType, pa.DataType] = {
    "int": pa.int64(),
    "flag": pa.int64(),
    "float": pa.float64(),
    "text": pa.string(),
    "datetime": pa.string(),
}

PROVENANCE = pa.schema(
    [
        pa.field("_row", pa.int64(), nullable=False),  # row number in the records table (to find the line again)
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


def raw_schema(kind: Kind) -> pa.Schema:
    """Provenance columns followed by the table's raw columns, typed."""
    table = RAW_TABLES[kind]
    return pa.schema([*PROVENANCE, *(pa.field(n, RAW_ARROW_TYPES[t]) for n, t in table.columns)])


@dataclass(frozen=True)
class Parsed:
    """Stage-1 output: ``rows`` (:func:`raw_schema`) and ``quarantine`` (:data:`QUARANTINE_SCHEMA`)."""

    rows: pa.Table
    quarantine: pa.Table


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


TRAILING_COMMA_RE = r",[ \t\n\r]*\}[ \t\n\r]*$"
"""A comma before the closing brace of the line: DuckDB's reader takes it, JSON (and orjson) does not."""


def _bulk_sql(kind: Kind) -> str:
    """One query over ``__pinpipe_records``: each line's typed values and whether the bulk check accepts it.

    Each line is parsed three times at most: the JSON types of the root and of every column (one list-form
    ``json_type``, under ``try`` so that invalid JSON is NULL), then — only for an object whose keys are exactly
    the columns it has — its key count (``json_keys``) and the column values (list-form ``json_extract_string``).
    ``len(keys) = number of columns present`` holds exactly when there is no unknown and no repeated key (every
    present column is counted once, whatever repeats; a JSON ``null`` counts as present).

    DuckDB's reader is laxer than JSON (and orjson) in two ways only, both sent to Python: ``NaN``/``Infinity``
    literals (typed DOUBLE: never accepted in bulk, see the checks) and trailing commas (``{"ind": 1,}``): an object
    whose last non-blank character before its closing brace is a comma is not decided in bulk (a fast-path object
    has scalar values only, so its closing brace is the line's last ``}``; the mask is computed by Arrow, whose
    end-anchored regex costs a fraction of DuckDB's).
    """
    table = RAW_TABLES[kind]
    paths = [_sql_string("$." + _json_path_key(n)) for n in table.column_names]
    type_paths = "['$', " + ", ".join(paths) + "]"
    value_paths = "[" + ", ".join(paths) + "]"
    checks = ["vs IS NOT NULL"]
    values = []
    for i, (name, raw_type) in enumerate(table.columns, start=1):
        typ, text = f"ts[{i + 1}]", f"vs[{i}]"
        absent = f"coalesce({typ}, 'NULL') = 'NULL'"
        if name == table.key:
            checks.append(f"{typ} = 'UBIGINT' AND TRY_CAST({text} AS BIGINT) IS NOT NULL")
            value = f"TRY_CAST({text} AS BIGINT)"
        elif raw_type == "int":
            checks.append(f"({absent} OR ({typ} IN ('UBIGINT', 'BIGINT') AND TRY_CAST({text} AS BIGINT) IS NOT NULL))")
            value = f"TRY_CAST({text} AS BIGINT)"
        elif raw_type == "flag":
            checks.append(f"({absent} OR ({typ} = 'UBIGINT' AND {text} IN ('0', '1')))")
            value = f"TRY_CAST({text} AS BIGINT)"
        elif raw_type == "float":  # 1e400 is not JSON for orjson (the API's parser): Python decides
            checks.append(
                f"({absent} OR ({typ} IN ('DOUBLE', 'UBIGINT', 'BIGINT') AND isfinite(TRY_CAST({text} AS DOUBLE))))"
            )
            value = f"TRY_CAST({text} AS DOUBLE)"
        else:  # text, datetime: only strings take the bulk path (numbers in text columns go to Python)
            checks.append(f"({absent} OR {typ} = 'VARCHAR')")
            value = text
        values.append(f'{value} AS "{name}"')
    return f"""
        WITH t AS (
            SELECT _row, topic, "partition", "offset", source, line, _comma_end,
                   CASE WHEN utf8 THEN try(json_type(line, {type_paths})) END AS ts
            FROM __pinpipe_records
        ), x AS (
            SELECT _row, topic, "partition", "offset", source, ts,
                   CASE WHEN ts[1] = 'OBJECT' AND len(json_keys(line)) = list_count(ts) - 1
                             AND NOT _comma_end
                        THEN json_extract_string(line, {value_paths}) END AS vs
            FROM t
        )
        SELECT _row, topic, "partition", "offset", source,
               coalesce({" AND ".join(checks)}, false) AS fast,
               {", ".join(values)}
        FROM x
    """


def _json_path_key(name: str) -> str:
    return name if name.isidentifier() else '"' + name + '"'


def _judge(kind: Kind, line: str, utf8: bool) -> tuple[str | None, dict[str, Any] | None]:
    """(reason, None) for a bad line, (None, typed values) for a good one — the Python rules."""
    if not utf8:
        return INVALID_JSON, None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return INVALID_JSON, None
    return check_raw(kind, value)


def parse_records(kind: Kind, records: pa.Table, conn: duckdb.DuckDBPyConnection | None = None) -> Parsed:
    """Split ``records`` (:data:`~pinpipe.clean.records.RECORDS_SCHEMA`) into typed raw rows and quarantine."""
    schema = raw_schema(kind)
    if records.num_rows == 0:
        return Parsed(schema.empty_table(), QUARANTINE_SCHEMA.empty_table())
    own = conn is None
    db = duckdb.connect() if conn is None else conn
    try:
        numbered = records.append_column("_row", pa.array(np.arange(records.num_rows, dtype=np.int64)))
        numbered = numbered.append_column(
            "_comma_end", pc.match_substring_regex(records.column("line"), TRAILING_COMMA_RE)
        )
        db.register("__pinpipe_records", numbered)
        try:
            bulk = query_arrow(db, _bulk_sql(kind), records.num_rows)
        finally:
            db.unregister("__pinpipe_records")
    finally:
        if own:
            db.close()
    fast_mask = bulk.column("fast")
    if pc.all(fast_mask).as_py():
        return Parsed(bulk.drop_columns(["fast"]).cast(schema), QUARANTINE_SCHEMA.empty_table())
    slow_rows = bulk.column("_row").filter(pc.invert(fast_mask)).to_pylist()
    fast = bulk.drop_columns(["fast"]).filter(fast_mask).cast(schema)
    del bulk

    slow = take_rows(records, pa.array(slow_rows, pa.int64())).to_pydict()
    good: dict[str, list[Any]] = {name: [] for name in schema.names}
    bad: dict[str, list[Any]] = {name: [] for name in QUARANTINE_SCHEMA.names}
    for i, row in enumerate(slow_rows):
        reason, values = _judge(kind, slow["line"][i], slow["utf8"][i])
        if values is None:
            bad["topic"].append(slow["topic"][i])
            bad["partition"].append(slow["partition"][i])
            bad["offset"].append(slow["offset"][i])
            bad["source"].append(slow["source"][i])
            bad["reason"].append(reason)
            bad["raw"].append(slow["line"][i])
            continue
        good["_row"].append(row)
        for name in ("topic", "partition", "offset", "source"):
            good[name].append(slow[name][i])
        for name, value in values.items():
            good[name].append(value)
    rows = pa.concat_tables([fast, pa.Table.from_pydict(good, schema=schema)])
    return Parsed(rows, pa.Table.from_pydict(bad, schema=QUARANTINE_SCHEMA))
