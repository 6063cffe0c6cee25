"""How one raw JSON value becomes a typed value of its column, or :data:`BAD`: the ranges and parsers that
:func:`pinpipe.tables.check_raw` (the API's check) and the cleaner share, so both read every value the same way.

Digit strings are measured before ``int()`` (Python refuses more than 4,300 digits), floats must be finite, and no
value of any shape raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final, Literal

RawType = Literal["int", "text", "float", "datetime", "flag"]
"""The source column types (SPEC §2)."""

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
KEY_RANGE: Final = (0, INT64_MAX)
"""The key (pin ``index``, geo/user ``ind``): a non-negative signed 64-bit integer (silver ``ind`` is int64)."""
INT_RANGE: Final = (INT64_MIN, INT64_MAX)
"""Every other ``int`` column (user ``age``): a signed 64-bit integer, as its silver column."""
JSON_INT_RANGE: Final = (INT64_MIN, 2**64 - 1)
"""The integers a JSON parser here keeps as integers (orjson, DuckDB's yyjson); a longer integer literal is read
as a double. A number in a ``text`` or ``float`` column is taken when it is a double or an integer in this range."""

_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_MAX_INT64_DIGITS = 19


class _Bad:
    """The marker :func:`raw_value` returns for a value that does not fit its column."""

    __slots__ = ()


BAD: Final = _Bad()


def parse_int(value: Any, bounds: tuple[int, int] = INT_RANGE) -> int | None:
    """The integer ``value`` stands for if it is a JSON integer or a string of ASCII digits (optional ``-``,
    surrounding whitespace ignored) within ``bounds``; None otherwise. Never raises: a digit string is measured
    before it is converted (Python refuses ``int()`` of strings over 4,300 digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not _INT_RE.fullmatch(text):
            return None
        digits = text.lstrip("-").lstrip("0")
        if len(digits) > _MAX_INT64_DIGITS:
            return None
        number = -int(digits or "0") if text.startswith("-") else int(digits or "0")
    else:
        return None
    return number if bounds[0] <= number <= bounds[1] else None


def parse_float(value: Any) -> float | None:
    """The finite double ``value`` stands for if it is a JSON number (an integer in :data:`JSON_INT_RANGE`) or a
    decimal numeral string (``1.5``, ``-.5``, ``1e-3``, surrounding whitespace ignored); None otherwise — also for
    ``NaN``/``Infinity`` spelled as strings and for numerals beyond the double range (``1e999``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return float(value) if JSON_INT_RANGE[0] <= value <= JSON_INT_RANGE[1] else None
    if isinstance(value, str):
        text = value.strip()
        if not _FLOAT_RE.fullmatch(text):
            return None
        number = float(text)  # a decimal numeral: float() rounds, or gives inf beyond the range; never raises
        return number if math.isfinite(number) else None
    return None


def raw_value(raw_type: RawType, value: Any, *, key: bool = False) -> Any:
    """``value`` (as a JSON parser gives it) as its raw column holds it, or :data:`BAD` when it does not fit.

    ``int`` → int within :data:`KEY_RANGE` (``key=True``) or :data:`INT_RANGE` (:func:`parse_int`); ``flag`` →
    0 or 1 (from 0, 1, true, false); ``float`` → a finite float (:func:`parse_float`); ``text`` → the string, or a
    number's Python ``str`` (an integer only in :data:`JSON_INT_RANGE`); ``datetime`` → the string (whether it
    names an instant is a cleaning question). Null is None in every column (the key's null is rejected before)."""
    if value is None:
        return None
    if type(value) is str and (raw_type == "text" or raw_type == "datetime"):
        return value
    return _CONVERT[raw_type](value, key)


def _int_value(value: Any, key: bool) -> Any:
    number = parse_int(value, KEY_RANGE if key else INT_RANGE)
    return BAD if number is None else number


def _flag_value(value: Any, key: bool) -> Any:
    return int(value) if value is True or value is False or (type(value) is int and value in (0, 1)) else BAD


def _float_value(value: Any, key: bool) -> Any:
    if type(value) is float and math.isfinite(value):
        return value
    real = parse_float(value)
    return BAD if real is None else real


def _text_value(value: Any, key: bool) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, float) or (
        isinstance(value, int) and not isinstance(value, bool) and JSON_INT_RANGE[0] <= value <= JSON_INT_RANGE[1]
    ):
        return str(value)
    return BAD


def _datetime_value(value: Any, key: bool) -> Any:
    return value if isinstance(value, str) else BAD


_CONVERT: dict[RawType, Callable[[Any, bool], Any]] = {
    "int": _int_value,
    "flag": _flag_value,
    "float": _float_value,
    "text": _text_value,
    "datetime": _datetime_value,
}
