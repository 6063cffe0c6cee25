"""The per-column profile of the silver tables: nulls now, and what cleaning turned into null on the way.

Called by :func:`pinpipe.report.html.collect_report`. Two sources, shown side by side for every column of the
three silver tables (SPEC §5 columns, in order, then any extra column):

- the table itself (``<lake>/silver/<kind>``): rows, nulls and their share, from the file statistics of its
  Delta log (no data file is read, whatever the table's size), except for columns whose statistics hold no
  null count (arrays such as ``coordinates``): those columns alone are read;
- the data-quality notes of the batch runs (``<lake>/_meta/runs``, column ``notes``): values cleaned to null
  because they were a placeholder (``placeholder:<column>``) or empty (``empty:<column>``), and follower counts
  that could not be parsed (``follower_count_unparsed``). Notes count records read, re-sends included, so they
  can exceed the nulls a table holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from pinpipe.errors import StoreUnavailableError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_BUCKET, SILVER_SCHEMAS, Kind

UNPARSED_NOTE = "follower_count_unparsed"


@dataclass(frozen=True)
class ColumnProfile:
    """One column of one silver table."""

    kind: Kind
    column: str
    type: str
    rows: int
    nulls: int
    placeholders: int
    empties: int
    unparsed: int

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


def null_counts(lake: Lake, kind: Kind) -> tuple[int, dict[str, int], pa.Schema] | None:
    """``(rows, {column: nulls}, schema)`` of ``<lake>/silver/<kind>`` from its file statistics (None: no table)."""
    uri = lake.table_uri("silver", kind)
    try:
        table = DeltaTable(uri, storage_options=lake.storage_options or None)
        schema = pa.schema(table.schema().to_arrow())
        actions = pa.table(table.get_add_actions(flatten=True))
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:
        raise StoreUnavailableError(f"could not read the statistics of {uri}: {exc}", table=uri) from exc
    rows = int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0
    nulls: dict[str, int] = {}
    unknown: list[str] = []
    for name in schema.names:
        stat = f"null_count.{name}"
        if actions.num_rows == 0:
            nulls[name] = 0
        elif stat in actions.schema.names and actions.column(stat).null_count == 0:
            nulls[name] = int(pc.sum(actions.column(stat)).as_py() or 0)
        else:
            unknown.append(name)
    if unknown:
        read = delta.read_table(lake, "silver", kind, columns=unknown)
        for name in unknown:
            nulls[name] = 0 if read is None else read.column(name).null_count
    return rows, nulls, schema


def _type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return f"timestamp ({t.tz})" if t.tz else "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{_type(t.value_type)}>"
    return {"int64": "bigint", "int32": "int", "large_string": "string"}.get(str(t), str(t))


def profile_table(lake: Lake, kind: Kind, notes: Counter[str]) -> tuple[int | None, list[ColumnProfile]]:
    """The rows of ``silver/<kind>`` and the profile of each of its columns (``(None, [])``: no table yet)."""
    counted = null_counts(lake, kind)
    if counted is None:
        return None, []
    names = list(SILVER_SCHEMAS[kind].names)
    rows, nulls, schema = counted
    names += [n for n in schema.names if n not in names and n != SILVER_BUCKET]  # the layout column is no data
    out = [
        ColumnProfile(
            kind=kind,
            column=name,
            type=_type(schema.field(name).type)
            if name in schema.names
            else _type(SILVER_SCHEMAS[kind].field(name).type),
            rows=rows,
            nulls=nulls.get(name, 0),
            placeholders=notes.get(f"placeholder:{name}", 0),
            empties=notes.get(f"empty:{name}", 0),
            unparsed=notes.get(UNPARSED_NOTE, 0) if name == "follower_count" else 0,
        )
        for name in names
    ]
    return rows, out
