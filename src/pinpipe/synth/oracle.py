"""The oracle: the correct silver tables, quarantine and accounting for records sent, in plain Python.

Callers: tests and benchmarks of the batch job, the stream job and ``pinpipe parity``. It shares no code with
the cleaning engine (:mod:`pinpipe.clean`) on purpose: only the contract — :func:`pinpipe.tables.validate_raw`,
the reason strings of :mod:`pinpipe.clean.quarantine` and :data:`pinpipe.tables.SILVER_SCHEMAS`. Typical use::

    sent = send_list(1000, seed=1, resend_rate=0.1, conflict_rate=0.02, faults=0.01).by_kind()
    ...  # send / land / clean
    expected = expected_output(sent)
    assert silver_rows_of_engine("pin") == expected.silver["pin"]
    assert expected.accounting["pin"].balanced

The rules (SPEC §5, with the choices SPEC leaves open made here and marked *decided*):

- A record is checked in this order, first failure wins: :func:`~pinpipe.tables.validate_raw` (``not_an_object``,
  ``missing_key:<key>``, ``bad_key:<key>``, ``unknown_field:<name>``, ``bad_type:<column>``), then
  ``bad_timestamp:<column>`` (geo ``timestamp``, user ``date_joined``: null, or not exactly
  ``YYYY-MM-DD HH:MM:SS`` / ``YYYY-MM-DDTHH:MM:SS``, or not a real date), then ``bad_coordinates`` (geo latitude or
  longitude null, latitude outside [-90, 90], longitude outside [-180, 180]).
- pin text columns (every pin column except ``index`` and ``downloaded``): a JSON number becomes its Python
  ``str`` (*decided*); null stays null; an empty string or one made only of ASCII whitespace
  (`` \\t\\n\\r\\f\\v``) becomes null; a placeholder becomes null **only in its own column**
  (:data:`PLACEHOLDERS`); anything else is kept exactly — no trimming. ``save_location`` loses a leading
  ``Local save in `` (and becomes null if nothing but whitespace is left, *decided*). ``downloaded`` is dropped.
- ``follower_count`` → int (:func:`parse_follower_count`): ``[0-9]+(\\.[0-9]+)?`` with an optional suffix k/K
  (×1e3), m/M (×1e6), b/B (×1e9), the product truncated toward zero (*decided*: ``1.2345k`` → 1234); anything
  else — including surrounding spaces, signs, and values beyond int64 — is null and counted in
  ``Accounting.follower_count_unparsed``.
- geo: ``coordinates`` = ``[float(latitude), float(longitude)]``; ``timestamp`` a timezone-aware UTC datetime
  (the wire form has no zone: it is read as UTC); ``country`` as is (a number becomes its ``str``).
- user: ``user_name`` = ``first_name + " " + last_name``, null if either is null (Spark's ``concat``,
  *decided*), no trimming; ``age`` int or null; ``date_joined`` as ``timestamp``.
- One silver row per key: among the valid records of a key the **last sent** wins. Accounting per kind:
  ``read = written + duplicates + quarantined`` where ``written`` = silver rows (distinct keys) and
  ``duplicates`` = valid records that did not end up as the row (every re-send, identical or not);
  ``conflicts`` counts the valid records whose cleaned row differs from the cleaned row of the previous valid
  record with the same key (in send order) — each change of a row's content, so a subset of ``duplicates``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import pyarrow as pa

from pinpipe.clean.quarantine import BAD_COORDINATES, bad_timestamp
from pinpipe.synth import vocabulary as v
from pinpipe.tables import (
    FOLLOWER_COUNT_RE,
    FOLLOWER_SUFFIX_PLACES,
    KINDS,
    RAW_TABLES,
    SILVER_SCHEMAS,
    Kind,
    key_of,
    validate_raw,
)
from pinpipe.values import parse_int

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "description": frozenset({v.STORY_DESCRIPTION, v.NO_DESCRIPTION, v.UNTITLED}),
    "title": frozenset({v.TITLE_PLACEHOLDER}),
    "poster_name": frozenset({v.USER_INFO_ERROR}),
    "follower_count": frozenset({v.USER_INFO_ERROR}),
    "tag_list": frozenset({v.NO_TAGS}),
    "image_src": frozenset({v.IMAGE_SRC_ERROR}),
}
"""Placeholder strings per pin column (SPEC §5); each becomes null only in its own column."""

PIN_TEXT_COLUMNS = tuple(name for name, raw_type in RAW_TABLES["pin"].columns if raw_type == "text")
_BLANK = re.compile(r"[ \t\n\r\f\v]*")
_FOLLOWERS = re.compile(FOLLOWER_COUNT_RE)
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})")
_INT64_MAX = 2**63 - 1


def parse_follower_count(value: Any) -> int | None:
    """The integer a raw ``follower_count`` stands for, or None (placeholder, blank or unparseable).

    ``"124k"`` → 124000, ``"1.5k"`` → 1500, ``"15M"`` → 15000000, ``"2b"`` → 2000000000, ``"305"`` → 305,
    ``305`` (a JSON number) → 305, ``"User Info Error"`` / ``"12kk"`` / ``" 12k"`` / ``"-5"`` → None."""
    text = _text(value)
    if text is None or text in PLACEHOLDERS["follower_count"]:
        return None
    match = _FOLLOWERS.fullmatch(text)
    if match is None:
        return None
    whole, decimals, suffix = match.group(1), match.group(2) or "", match.group(3)
    if len(whole.lstrip("0")) > 19:  # beyond int64 whatever the suffix (and beyond Decimal's exact precision)
        return None
    multiplier = 10 ** FOLLOWER_SUFFIX_PLACES[suffix]
    number = int(Decimal(f"{whole}.{decimals[:9] or 0}") * multiplier)  # ×1e9 at most: 9 decimals matter
    return number if number <= _INT64_MAX else None


def parse_timestamp(value: Any) -> datetime | None:
    """A wire datetime (``YYYY-MM-DD HH:MM:SS`` or ``YYYY-MM-DDTHH:MM:SS``) as an aware UTC datetime, or None."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return None if _BLANK.fullmatch(text) else text


def _clean_pin_text(column: str, value: Any) -> str | None:
    text = _text(value)
    if text is None or text in PLACEHOLDERS.get(column, ()):
        return None
    if column == "save_location" and text.startswith(v.SAVE_PREFIX):
        return _text(text[len(v.SAVE_PREFIX) :])
    return text


class Cleaned(NamedTuple):
    """The outcome for one record: a silver row, or the quarantine reason; and whether follower_count was an
    unparseable value (a data-quality note, not a rejection)."""

    row: dict[str, Any] | None
    reason: str | None
    follower_count_unparsed: bool = False


def clean_record(kind: Kind, record: Any) -> Cleaned:
    """Clean one raw record of ``kind`` by the rules in the module docstring."""
    reason = validate_raw(kind, record)
    if reason is not None:
        return Cleaned(None, reason)
    ind = key_of(kind, record)
    if kind == "pin":
        text = {column: _clean_pin_text(column, record.get(column)) for column in PIN_TEXT_COLUMNS}
        followers = parse_follower_count(record.get("follower_count"))
        unparsed = followers is None and text["follower_count"] is not None
        row = {
            name: ind if name == "ind" else text[name]
            for name in SILVER_SCHEMAS["pin"].names
            if name != "follower_count"
        }
        row["follower_count"] = followers
        return Cleaned({name: row[name] for name in SILVER_SCHEMAS["pin"].names}, None, unparsed)
    if kind == "geo":
        timestamp = parse_timestamp(record.get("timestamp"))
        if timestamp is None:
            return Cleaned(None, bad_timestamp("timestamp"))
        lat, lon = record.get("latitude"), record.get("longitude")
        if lat is None or lon is None:
            return Cleaned(None, BAD_COORDINATES)
        lat, lon = float(lat), float(lon)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            return Cleaned(None, BAD_COORDINATES)
        country = record.get("country")
        country = country if country is None or isinstance(country, str) else str(country)
        return Cleaned({"ind": ind, "country": country, "coordinates": [lat, lon], "timestamp": timestamp}, None)
    joined = parse_timestamp(record.get("date_joined"))
    if joined is None:
        return Cleaned(None, bad_timestamp("date_joined"))
    first, last, age = record.get("first_name"), record.get("last_name"), record.get("age")
    user_name = None if first is None or last is None else f"{_as_str(first)} {_as_str(last)}"
    return Cleaned(
        {"ind": ind, "user_name": user_name, "age": None if age is None else parse_int(age), "date_joined": joined},
        None,
    )


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record that did not become a silver row: its position in the sent sequence (0-based, per kind), the
    reason (a :mod:`pinpipe.clean.quarantine` string) and the record as sent."""

    position: int
    reason: str
    record: Any


@dataclass
class Accounting:
    """Counts for one kind; see the module docstring for their meaning."""

    read: int = 0
    written: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    follower_count_unparsed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """``read == written + duplicates + quarantined``."""
        return self.read == self.written + self.duplicates + self.quarantined


class ExpectedOutput(NamedTuple):
    """What the pipeline must produce from the records sent, per kind."""

    silver: dict[Kind, list[dict[str, Any]]]
    """Silver rows ordered by ``ind``; dicts in :data:`~pinpipe.tables.SILVER_SCHEMAS` column order."""
    quarantine: dict[Kind, list[QuarantinedRecord]]
    """Quarantined records in send order."""
    accounting: dict[Kind, Accounting]

    def silver_table(self, kind: Kind) -> pa.Table:
        """The silver rows of ``kind`` as an Arrow table with the silver schema (for comparing with Delta)."""
        return pa.Table.from_pylist(self.silver[kind], schema=SILVER_SCHEMAS[kind])


def expected_output(sent: Mapping[Kind, Sequence[Any]]) -> ExpectedOutput:
    """The correct output for ``sent`` — per kind, the records in the order they were sent (landed). Kinds
    missing from ``sent`` have no records."""
    silver: dict[Kind, list[dict[str, Any]]] = {}
    quarantine: dict[Kind, list[QuarantinedRecord]] = {}
    accounting: dict[Kind, Accounting] = {}
    for kind in KINDS:
        counts = Accounting()
        rows: dict[int, dict[str, Any]] = {}
        rejected: list[QuarantinedRecord] = []
        for position, record in enumerate(sent.get(kind, ())):
            counts.read += 1
            outcome = clean_record(kind, record)
            if outcome.row is None:
                assert outcome.reason is not None
                rejected.append(QuarantinedRecord(position, outcome.reason, record))
                code = outcome.reason.split(":", 1)[0]
                counts.reasons[code] = counts.reasons.get(code, 0) + 1
                continue
            counts.follower_count_unparsed += outcome.follower_count_unparsed
            ind = outcome.row["ind"]
            previous = rows.get(ind)
            if previous is not None:
                counts.duplicates += 1
                counts.conflicts += previous != outcome.row
            rows[ind] = outcome.row
        counts.quarantined = len(rejected)
        counts.written = len(rows)
        silver[kind] = [rows[ind] for ind in sorted(rows)]
        quarantine[kind] = rejected
        accounting[kind] = counts
    return ExpectedOutput(silver, quarantine, accounting)


def split_by_api(
    sent: Mapping[Kind, Sequence[Any]],
) -> tuple[dict[Kind, list[Any]], dict[Kind, list[QuarantinedRecord]]]:
    """Which records the ingestion API accepts (they pass :func:`~pinpipe.tables.validate_raw`) and which it
    rejects, with the reason. Feed the accepted ones to :func:`expected_output` when records travel through the
    API; records written straight to the landing zone are all cleaned (and quarantined when raw-invalid)."""
    accepted: dict[Kind, list[Any]] = {}
    rejected: dict[Kind, list[QuarantinedRecord]] = {}
    for kind in KINDS:
        accepted[kind], rejected[kind] = [], []
        for position, record in enumerate(sent.get(kind, ())):
            reason = validate_raw(kind, record)
            if reason is None:
                accepted[kind].append(record)
            else:
                rejected[kind].append(QuarantinedRecord(position, reason, record))
    return accepted, rejected
