"""The unit of input to cleaning: one record as stored in the log or landed in the lake.

:class:`RawRecord` is the contract type (the stream path builds them from log records). Internally cleaning
works on an Arrow table with :data:`RECORDS_SCHEMA`, one row per record: :func:`records_table` converts
RawRecords, and the batch job builds it straight from landed objects (:func:`records_from_object`) — building a
columnar table once is what keeps a million records cheap: nothing downstream touches them one by one unless
they are dirty.

Columns: ``topic``, ``partition``, ``offset`` (the record's own offset: a landed object's start offset plus its
line number), ``source`` (the landed object key, or ``"log"``), ``line`` (the text exactly as received; bytes that
are not UTF-8 are shown with U+FFFD) and ``utf8`` (False when the bytes were not UTF-8 — such a line is
``invalid_json`` whatever it looks like after replacement).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record exactly as stored: a JSON object (no envelope) and where it came from.

    ``(topic, partition, offset)`` identifies it; the last record of an ``ind`` in ``(partition, offset)`` order wins.
    ``source`` is the landed object key (batch path) or ``"log"`` (stream path).
    """

    topic: str
    partition: int
    offset: int
    line: bytes
    source: str


RECORDS_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.large_string(), nullable=False),
        pa.field("utf8", pa.bool_(), nullable=False),
    ]
)

LOG_SOURCE = "log"
"""``source`` of records that came straight from the event log (the stream path)."""


def split_lines(data: bytes) -> tuple[list[str], list[bool]]:
    """The lines of a landed object (one JSON value per line, ``\\n``-terminated; a final newline ends the last
    line, it does not start an empty one) and, per line, whether it was valid UTF-8."""
    if not data:
        return [], []
    try:
        lines = data.decode("utf-8").split("\n")
        ok = [True] * len(lines)
    except UnicodeDecodeError:
        lines, ok = [], []
        for part in data.split(b"\n"):
            try:
                lines.append(part.decode("utf-8"))
                ok.append(True)
            except UnicodeDecodeError:
                lines.append(part.decode("utf-8", "replace"))
                ok.append(False)
    if lines and lines[-1] == "" and data.endswith(b"\n"):
        lines.pop()
        ok.pop()
    return lines, ok


def records_from_object(
    topic: str, partition: int, start_offset: int, source: str, data: bytes, *, min_offset: int = 0
) -> pa.Table:
    """Records of one landed object (line ``i`` has offset ``start_offset + i``), keeping offsets ≥ ``min_offset``."""
    lines, ok = split_lines(data)
    skip = max(0, min_offset - start_offset)
    if skip:
        lines, ok = lines[skip:], ok[skip:]
    n = len(lines)
    first = start_offset + skip
    return pa.Table.from_arrays(
        [
            pa.array([topic] * n, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array(range(first, first + n), pa.int64()),
            pa.array([source] * n, pa.string()),
            pa.array(lines, pa.large_string()),
            pa.array(ok, pa.bool_()),
        ],
        schema=RECORDS_SCHEMA,
    )


def records_table(records: Sequence[RawRecord]) -> pa.Table:
    """RawRecords as a :data:`RECORDS_SCHEMA` table (same order)."""
    lines: list[str] = []
    ok: list[bool] = []
    for rec in records:
        line = rec.line
        if isinstance(line, str):
            lines.append(line)
            ok.append(True)
            continue
        try:
            lines.append(bytes(line).decode("utf-8"))
            ok.append(True)
        except UnicodeDecodeError:
            lines.append(bytes(line).decode("utf-8", "replace"))
            ok.append(False)
    return pa.Table.from_arrays(
        [
            pa.array([r.topic for r in records], pa.string()),
            pa.array([r.partition for r in records], pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.source for r in records], pa.string()),
            pa.array(lines, pa.large_string()),
            pa.array(ok, pa.bool_()),
        ],
        schema=RECORDS_SCHEMA,
    )


def concat_records(tables: Iterable[pa.Table]) -> pa.Table:
    """One records table from many (an empty one if there are none)."""
    parts = list(tables)
    if not parts:
        return RECORDS_SCHEMA.empty_table()
    return pa.concat_tables(parts).combine_chunks()
