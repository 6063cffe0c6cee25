"""Quarantine reasons: why a record did not become a silver row.

A reason is a short string ``<code>`` or ``<code>:<column>``. The set is closed; the generator's oracle, the API
and the cleaner all use these exact strings. Checks run in this order and the first failure is the reason:

Raw shape (the same checks the API runs, :func:`pinpipe.tables.validate_raw`):
  ``invalid_json``           the landed line is not one complete JSON value (truncated, binary, empty)
  ``not_an_object``          a JSON value that is not an object (an array, a number, a string)
  ``missing_key:<key>``      no ``index`` (pin) / ``ind`` (geo, user), or it is null
  ``bad_key:<key>``          the key is not an integer in 0..2^63-1 (a JSON integer or a string of digits)
  ``unknown_field:<name>``   a field the table does not have (a long name cut at 100 characters, then ``…``)
  ``bad_type:<column>``      a value of the wrong JSON type or out of range for its column (``int``: int64;
                             ``float``: a finite double — ``"1e999"``, ``"NaN"`` do not fit), per
                             :func:`pinpipe.values.raw_value`

Semantics (cleaning, :mod:`pinpipe.clean.rules`):
  ``bad_timestamp:<column>`` geo ``timestamp`` / user ``date_joined`` is null or parses in neither wire form
                             (``YYYY-MM-DD HH:MM:SS`` or ``YYYY-MM-DDTHH:MM:SS``, a real instant, years 0001-9999)
  ``bad_coordinates``        geo latitude or longitude is null, or latitude outside [-90, 90] or longitude
                             outside [-180, 180]

Not quarantined (the row is kept, the value becomes null and a data-quality note is counted): placeholders,
empty strings, and a ``follower_count`` that is not a number with an optional k/M/B suffix.
"""

from __future__ import annotations

from typing import Final

INVALID_JSON: Final = "invalid_json"
NOT_AN_OBJECT: Final = "not_an_object"
BAD_COORDINATES: Final = "bad_coordinates"


def bad_timestamp(column: str) -> str:
    return f"bad_timestamp:{column}"


REASON_CODES: Final = (
    "invalid_json",
    "not_an_object",
    "missing_key",
    "bad_key",
    "unknown_field",
    "bad_type",
    "bad_timestamp",
    "bad_coordinates",
)


def reason_code(reason: str) -> str:
    """The code part of a reason (``bad_type:age`` → ``bad_type``)."""
    return reason.split(":", 1)[0]
