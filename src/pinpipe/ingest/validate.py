"""Per-record validation for the API hot path: a fast check that accepts the common well-typed record, falling
back to :func:`pinpipe.tables.validate_raw` (the contract, with its reason strings) for anything else.

Called by both dialect modules for every record, on values as orjson parses them (integers within
``tables.JSON_INT_RANGE``, finite floats). On those values the fast path accepts a record only when
``validate_raw`` would (tested against it on generated records in ``tests/unit/test_ingest_validate.py``);
whatever it is unsure about — strings in numeric columns, unknown fields, nulls in the key — goes to
``validate_raw``, so acceptance and the reasons are exactly the contract's. Ranges come from :mod:`pinpipe.tables`
too: a key outside ``KEY_RANGE`` or an ``int`` column outside ``INT_RANGE`` is never surely valid.

Memory: verdicts are remembered per record *shape* (field names in order and value types), but only for shapes
made of the table's own column names — at most :data:`MAX_SHAPES` entries of at most one short name per column.
A shape with a field the table does not have is judged afresh each time, so rejected requests keep nothing.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from pinpipe.tables import KINDS, RAW_TABLES, Kind, validate_raw
from pinpipe.values import INT_RANGE, KEY_RANGE

_TEXT = (str, int, float)
_ACCEPT: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "text": _TEXT,
    "datetime": (str,),
    "flag": (bool,),
}
_TYPES: dict[Kind, dict[str, tuple[type, ...]]] = {
    kind: {name: _ACCEPT[raw_type] for name, raw_type in RAW_TABLES[kind].columns} for kind in KINDS
}
_FLAGS: dict[Kind, tuple[str, ...]] = {
    kind: tuple(name for name, raw_type in RAW_TABLES[kind].columns if raw_type == "flag") for kind in KINDS
}
_BOUNDED: dict[Kind, tuple[tuple[str, int, int], ...]] = {
    kind: tuple(
        (name, *((0, 1) if raw_type == "flag" else INT_RANGE))
        for name, raw_type in RAW_TABLES[kind].columns
        if raw_type == "flag" or (raw_type == "int" and name != RAW_TABLES[kind].key)
    )
    for kind in KINDS
}
"""What a shape cannot say, per kind: ``(column, lo, hi)`` for each column whose JSON integer must lie in
``lo..hi`` — a flag in 0..1, an ``int`` column other than the key in ``INT_RANGE``."""
_KEY_MIN, _KEY_MAX = KEY_RANGE

MAX_SHAPES: Final = 4096
"""Shapes remembered at most (then the cache starts again): each entry is a few hundred bytes."""


def _shape_ok(kind: Kind, names: tuple[str, ...], types: tuple[type, ...]) -> bool:
    accepted = _TYPES[kind]
    for name, tv in zip(names, types, strict=True):
        ok = accepted.get(name)
        if ok is None:
            return False
        if tv is type(None) or tv in ok or (name in _FLAGS[kind] and tv is int):
            continue
        return False
    return True


_SHAPES: dict[tuple[Kind, tuple[str, ...], tuple[type, ...]], bool] = {}
"""Verdicts per (kind, field names in order, value types) of shapes whose names are all columns of the table:
producers send the same shape again and again."""


def _values_ok(kind: Kind, row: dict[str, Any]) -> bool:
    """What a good shape cannot say: each integer of a :data:`_BOUNDED` column is within its bounds."""
    for name, lo, hi in _BOUNDED[kind]:
        number = row.get(name)
        if type(number) is int and not lo <= number <= hi:
            return False
    return True


def _surely_valid(kind: Kind, value: Any) -> bool:
    if type(value) is not dict:
        return False
    key = value.get(RAW_TABLES[kind].key)
    if type(key) is not int or not _KEY_MIN <= key <= _KEY_MAX:
        return False
    shape = (kind, tuple(value), tuple(map(type, value.values())))
    verdict = _SHAPES.get(shape)
    if verdict is None:
        verdict = _shape_ok(kind, shape[1], shape[2])
        columns = _TYPES[kind]
        if all(name in columns for name in shape[1]):  # never a name the table does not have
            if len(_SHAPES) >= MAX_SHAPES:
                _SHAPES.clear()
            _SHAPES[shape] = verdict
    return verdict and _values_ok(kind, value)


def _all_surely_valid(kind: Kind, rows: list[Any]) -> bool:
    """``all(_surely_valid(kind, row) for row in rows)`` with the per-row work inlined (the API's hot loop)."""
    key_name = RAW_TABLES[kind].key
    bounded = _BOUNDED[kind]
    key_min, key_max = _KEY_MIN, _KEY_MAX
    for row in rows:
        if type(row) is not dict:
            return False
        key = row.get(key_name)
        if type(key) is not int or key < key_min or key > key_max:
            return False
        verdict = _SHAPES.get((kind, tuple(row), tuple(map(type, row.values()))))
        if verdict is None:  # a shape not seen yet: the full check decides (and remembers it if it may)
            if not _surely_valid(kind, row):
                return False
            continue
        if not verdict:
            return False
        for name, lo, hi in bounded:  # what the shape cannot say, as _values_ok
            number = row.get(name)
            if type(number) is int and not lo <= number <= hi:
                return False
    return True


def check_record(kind: Kind, value: Any) -> str | None:
    """Why ``value`` cannot be a raw row of ``kind`` (``validate_raw``'s reason), or None if it can."""
    if _surely_valid(kind, value):
        return None
    return validate_raw(kind, value)


def encode_valid(kind: Kind, rows: list[Any], max_bytes: int) -> tuple[list[bytes], list[bytes | None]] | None:
    """Compact JSON values and ``ind`` keys of ``rows`` when every row is surely valid and small enough; None
    when any row needs the per-record path (which names the first bad record and its reason)."""
    if not _all_surely_valid(kind, rows):
        return None
    try:
        values = list(map(orjson.dumps, rows))
    except orjson.JSONEncodeError:
        return None
    if max(map(len, values), default=0) > max_bytes:
        return None
    key = RAW_TABLES[kind].key
    keys: list[bytes | None] = [b"%d" % row[key] for row in rows]
    return values, keys


_JSON_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": ["integer", "null"], "minimum": INT_RANGE[0], "maximum": INT_RANGE[1]},
    "float": {"type": ["number", "null"]},
    "text": {"type": ["string", "null"]},
    "datetime": {"type": ["string", "null"], "examples": ["2020-08-28 03:52:47"]},
    "flag": {"enum": [0, 1, True, False, None]},
}


def row_schema(kind: Kind) -> dict[str, Any]:
    """JSON schema of one raw row of ``kind`` for the OpenAPI document, with the ranges of :mod:`pinpipe.tables`
    (the API checks with ``validate_raw``, which also takes numeric strings in numeric columns)."""
    table = RAW_TABLES[kind]
    properties = {name: dict(_JSON_TYPES[raw_type]) for name, raw_type in table.columns}
    properties[table.key] = {"type": "integer", "minimum": KEY_RANGE[0], "maximum": KEY_RANGE[1]}
    return {
        "title": f"{table.name} row",
        "type": "object",
        "required": [table.key],
        "additionalProperties": False,
        "properties": properties,
    }
