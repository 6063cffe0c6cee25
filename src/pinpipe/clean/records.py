"""The unit of input to cleaning: one record as stored in the log or landed in the lake.

:class:`RawRecord` is the contract type (the stream path builds them from log records). Internally cleaning
works on an Arrow table with :data:`RECORDS_SCHEMA`, one row per record: :func:`records_table` converts
RawRecords, and the batch job builds it straight from landed objects (:func:`records_from_object`) — building a
columnar table once is what keeps a million records cheap: nothing downstream touches them one by one unless
they are dirty.

Columns: ``topic``, ``partition``, ``offset`` (the record's own offset: a landed object's start offset plus its
line number), ``source`` (the landed object key, or ``"log"``), ``line`` (the text exactly as received, possibly
with its ``\n`` terminator — JSON ignores it and quarantine strips it; bytes that are not UTF-8 are shown with
U+FFFD) and ``utf8`` (False when the bytes were not UTF-8 — such a line is ``invalid_json`` whatever it looks like
after replacement).

A landed object that is valid UTF-8 (the normal case) becomes a table without a Python object per line: the
lines are the object's bytes cut at each ``\n`` (an Arrow string array over the same buffer: offsets computed
with numpy, no copy).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
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
    lines = _line_array(data)
    if lines is None:
        texts, ok = split_lines(data)
        lines, utf8 = pa.array(texts, pa.large_string()), pa.array(ok, pa.bool_())
    else:
        utf8 = pa.repeat(pa.scalar(True), len(lines))
    skip = min(max(0, min_offset - start_offset), len(lines))
    if skip:
        lines, utf8 = lines.slice(skip), utf8.slice(skip)
    n = len(lines)
    first = start_offset + skip
    return pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array(np.arange(first, first + n, dtype=np.int64)),
            pa.repeat(pa.scalar(source, pa.string()), n),
            lines,
            utf8,
        ],
        schema=RECORDS_SCHEMA,
    )


def _line_array(data: bytes) -> pa.Array | None:
    """The lines of ``data`` as a large-string array over ``data`` itself (each line keeps its ``\n``), or None
    if ``data`` is not valid UTF-8."""
    if not data:
        return pa.array([], pa.large_string())
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A) + 1
    if ends.size == 0 or ends[-1] != len(data):
        ends = np.append(ends, len(data))  # a last line without a terminator
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return lines


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
    """One records table from many (an empty one if there are none); the parts' buffers are not copied."""
    parts = list(tables)
    if not parts:
        return RECORDS_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def take_rows(table: pa.Table, rows: pa.Array) -> pa.Table:
    """``table.take(rows)`` for a few ``rows`` (sorted or not) of a table of many chunks (one per landed object):
    chunk by chunk, where pyarrow's ``take`` would first concatenate every chunk of every column."""
    indices = np.asarray(rows.to_numpy(zero_copy_only=False), dtype=np.int64)
    if table.num_rows == 0 or indices.size == 0 or table.column(0).num_chunks <= 1:
        return table.take(rows)
    batches = table.to_batches()
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    owner = np.searchsorted(starts, indices, side="right") - 1
    order = np.argsort(owner, kind="stable")
    parts = []
    for chunk in np.unique(owner):
        local = indices[order][owner[order] == chunk] - starts[chunk]
        parts.append(batches[chunk].take(pa.array(local)))
    taken = pa.Table.from_batches(parts, schema=table.schema)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return taken.take(pa.array(position))  # back to the order of ``rows``
