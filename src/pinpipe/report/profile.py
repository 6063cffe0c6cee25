"""The per-column profile of the silver tables: nulls now, and what cleaning turned into null on the way.

Called by :func:`pinpipe.report.html.collect_report`. Two sources, shown side by side for every column of the
three silver tables (SPEC §5 columns, in order, then any extra column):

- the table itself (``<lake>/silver/<kind>``): rows, nulls and their share, distinct non-null values;
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

from pinpipe.tables import SILVER_SCHEMAS, Kind

UNPARSED_NOTE = "follower_count_unparsed"


@dataclass(frozen=True)
class ColumnProfile:
    """One column of one silver table."""

    kind: Kind
    column: str
    type: str
    rows: int
    nulls: int
    distinct: int | None
    placeholders: int
    empties: int
    unparsed: int

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


def _distinct(column: pa.ChunkedArray) -> int | None:
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return None
    return int(pc.count_distinct(column, mode="only_valid").as_py())


def _type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return f"timestamp ({t.tz})" if t.tz else "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{_type(t.value_type)}>"
    return {"int64": "bigint", "int32": "int", "large_string": "string"}.get(str(t), str(t))


def profile_table(kind: Kind, table: pa.Table | None, notes: Counter[str]) -> list[ColumnProfile]:
    """The profile of every column of ``silver/<kind>`` (``table`` None: no table yet, notes only)."""
    names = list(SILVER_SCHEMAS[kind].names)
    if table is not None:
        names += [n for n in table.schema.names if n not in names]
    out: list[ColumnProfile] = []
    for name in names:
        if table is not None and name in table.schema.names:
            column = table.column(name)
            rows, nulls, distinct, type_ = table.num_rows, column.null_count, _distinct(column), _type(column.type)
        else:
            rows, nulls, distinct, type_ = 0, 0, None, _type(SILVER_SCHEMAS[kind].field(name).type)
        out.append(
            ColumnProfile(
                kind=kind,
                column=name,
                type=type_,
                rows=rows,
                nulls=nulls,
                distinct=distinct,
                placeholders=notes.get(f"placeholder:{name}", 0),
                empties=notes.get(f"empty:{name}", 0),
                unparsed=notes.get(UNPARSED_NOTE, 0) if name == "follower_count" else 0,
            )
        )
    return out
