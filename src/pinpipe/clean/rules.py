"""Stage 2 of cleaning (SPEC §5): typed raw rows → silver columns, semantic quarantine reasons, the winner per ind.

Written once against the PySpark DataFrame API and run unchanged on SQLFrame/DuckDB and on PySpark: it takes
``engine.F`` / ``engine.Window`` from the :class:`~pinpipe.engine.Engine` and uses only what behaves the same on
both (checked by tests): ``rlike`` with ``\\A…\\z`` anchors (Java's ``$`` would accept a trailing newline),
``regexp_extract``, ``regexp_replace``, ``rpad``, ``substring``, ``try_cast`` through ``F.expr``,
``try_to_timestamp`` with one space-separated pattern, ``eqNullSafe``, ``first``/``row_number`` over a window.

Rules, per column (the row is kept; a changed value counts a data-quality note):

- pin text columns: an empty or whitespace-only string (space, tab, CR, LF, FF, VT) → null (note ``empty:<col>``);
  the SPEC placeholders, each only in its own column and matched exactly → null (note ``placeholder:<col>``);
- ``follower_count``: ``<digits>[.<digits>][k|K|m|M|b|B]`` → int64, ``floor(number × 10³/10⁶/10⁹)`` computed
  on the digit string (no floating point); anything else, or a value beyond int64 → null
  (note ``follower_count_unparsed``);
- ``save_location``: a leading ``Local save in `` is removed (then an empty result → null);
- ``coordinates`` = ``[latitude, longitude]``; ``user_name`` = ``first_name + " " + last_name`` (null if either
  is null).

Semantic quarantine (checked in this order, first failure wins): ``bad_timestamp:<col>`` when geo ``timestamp``
/ user ``date_joined`` is null or is not ``YYYY-MM-DD HH:MM:SS`` / ``YYYY-MM-DDTHH:MM:SS`` naming a real instant
(UTC); ``bad_coordinates`` when latitude or longitude is null or outside [-90, 90] / [-180, 180].

The winner per ``ind`` among the good rows is the last by ``(partition, offset)`` (then topic, for records of
two topics at the same position); ``_differs`` marks a good row whose cleaned content differs from the previous
good row of its ``ind`` in that order (a *conflict*: each change of a row's content counts once; a later row equal
to its predecessor is a *duplicate*); ``_first`` marks the first good row of an ``ind`` that has later ones (its
predecessor is the row silver already holds, if any: the caller compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pinpipe.clean.quarantine import BAD_COORDINATES, bad_timestamp
from pinpipe.engine import Engine
from pinpipe.tables import FOLLOWER_COUNT_RE, FOLLOWER_SUFFIX_PLACES, SILVER_SCHEMAS, Kind

PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "description": ("No description available Story format", "No description available", "Untitled"),
    "title": ("No Title Data Available",),
    "poster_name": ("User Info Error",),
    "follower_count": ("User Info Error",),
    "tag_list": ("N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e",),
    "image_src": ("Image src error.",),
}
"""Exact placeholder strings per pin column (SPEC §5)."""

PIN_TEXT = (
    "unique_id",
    "title",
    "description",
    "follower_count",
    "poster_name",
    "tag_list",
    "is_image_or_video",
    "image_src",
    "save_location",
    "category",
)

BLANK_RE = r"\A[ \t\n\r\f\x0B]*\z"
FOLLOWER_RE = rf"\A{FOLLOWER_COUNT_RE}\z"
TIMESTAMP_RE = (
    r"\A(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}\z"
)
TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"
SAVE_PREFIX_RE = r"^Local save in "
_SUFFIX_DIGITS = tuple(
    ("".join(s for s, p in FOLLOWER_SUFFIX_PLACES.items() if p == places), places)
    for places in sorted(set(FOLLOWER_SUFFIX_PLACES.values()) - {0})
)

FOLLOWER_NOTE = "follower_count_unparsed"

PROVENANCE_COLUMNS = ("_row", "topic", "partition", "offset")

NOTES: dict[Kind, tuple[str, ...]] = {
    "pin": (
        *(
            note
            for name in PIN_TEXT
            for note in (f"empty:{name}", *((f"placeholder:{name}",) if name in PLACEHOLDERS else ()))
        ),
        FOLLOWER_NOTE,
    ),
    "geo": (),
    "user": (),
}
"""The data-quality notes of each kind, in the order of the ``_note<i>`` columns of :class:`CleanedFrame`."""


@dataclass(frozen=True)
class CleanedFrame:
    """The stage-2 DataFrame and the meaning of its note columns.

    Columns: ``_row, topic, partition, offset, reason`` (null for a good row), the silver columns, ``_win``
    (the row that goes to silver), ``_differs`` (a good row whose content differs from its predecessor's),
    ``_first`` (the first good row of an ``ind`` with several, not the winner), then one
    boolean column per name in ``notes`` (``_note0``, ``_note1``, …).
    """

    df: Any
    notes: tuple[str, ...]


def _when_true(F: Any, cond: Any) -> Any:
    """A null-safe boolean: null counts as false."""
    return F.coalesce(cond, F.lit(False))


def _parse_timestamp(F: Any, col: Any) -> Any:
    return F.when(
        _when_true(F, col.rlike(TIMESTAMP_RE)),
        F.try_to_timestamp(F.regexp_replace(col, "T", " "), F.lit(TIMESTAMP_FORMAT)),
    )


def _pin(F: Any, df: Any) -> tuple[Any, list[str], list[Any]]:
    notes: list[str] = []
    flags: list[Any] = []
    cols: dict[str, Any] = {}
    for name in PIN_TEXT:
        col = F.col(name)
        if name == "save_location":
            col = F.regexp_replace(col, SAVE_PREFIX_RE, "")
        empty = _when_true(F, col.rlike(BLANK_RE))
        placeholder = _when_true(F, col.isin(list(PLACEHOLDERS[name]))) if name in PLACEHOLDERS else None
        drop = empty if placeholder is None else (empty | placeholder)
        cols[name] = F.when(drop, F.lit(None)).otherwise(col)
        notes.append(f"empty:{name}")
        flags.append(empty)
        if placeholder is not None:
            notes.append(f"placeholder:{name}")
            flags.append(placeholder)
    # follower_count: the integer as a digit string (int part + the first 3/6/9 decimals), then try_cast
    fc = cols["follower_count"]
    int_part = F.regexp_extract(fc, FOLLOWER_RE, 1)
    decimals = F.rpad(F.regexp_extract(fc, FOLLOWER_RE, 2), 9, "0")
    suffix = F.regexp_extract(fc, FOLLOWER_RE, 3)
    digits = F.when(~_when_true(F, fc.rlike(FOLLOWER_RE)), F.lit(None))
    for letters, places in _SUFFIX_DIGITS:
        digits = digits.when(suffix.isin(list(letters)), F.concat(int_part, F.substring(decimals, 1, places)))
    digits = digits.otherwise(int_part)
    stage = df.select(
        *PROVENANCE_COLUMNS,
        F.lit(None).cast("string").alias("reason"),
        F.col("index").alias("ind"),
        *(cols[n].alias(n) for n in PIN_TEXT if n != "follower_count"),
        fc.alias("_fc_text"),
        digits.alias("_fc_digits"),
        *(flag.alias(f"_note{i}") for i, flag in enumerate(flags)),
    )
    follower = F.expr("try_cast(_fc_digits AS bigint)")
    unparsed = F.col("_fc_text").isNotNull() & follower.isNull()
    n = len(flags)
    out = stage.select(
        *PROVENANCE_COLUMNS,
        "reason",
        "ind",
        "unique_id",
        "title",
        "description",
        follower.alias("follower_count"),
        *(c for c in SILVER_SCHEMAS["pin"].names[5:]),
        *(f"_note{i}" for i in range(n)),
        unparsed.alias(f"_note{n}"),
    )
    return out, [*notes, FOLLOWER_NOTE], []


def _geo(F: Any, df: Any) -> tuple[Any, list[str], list[Any]]:
    ts = _parse_timestamp(F, F.col("timestamp"))
    lat, lon = F.col("latitude"), F.col("longitude")
    bad_coords = lat.isNull() | lon.isNull() | (lat < -90) | (lat > 90) | (lon < -180) | (lon > 180)
    reason = F.when(ts.isNull(), F.lit(bad_timestamp("timestamp"))).when(bad_coords, F.lit(BAD_COORDINATES))
    out = df.select(
        *PROVENANCE_COLUMNS,
        reason.alias("reason"),
        "ind",
        "country",
        F.array(lat, lon).alias("coordinates"),
        ts.alias("timestamp"),
    )
    return out, [], []


def _user(F: Any, df: Any) -> tuple[Any, list[str], list[Any]]:
    joined = _parse_timestamp(F, F.col("date_joined"))
    first, last = F.col("first_name"), F.col("last_name")
    name = F.when(first.isNotNull() & last.isNotNull(), F.concat(first, F.lit(" "), last))
    reason = F.when(joined.isNull(), F.lit(bad_timestamp("date_joined")))
    out = df.select(
        *PROVENANCE_COLUMNS,
        reason.alias("reason"),
        "ind",
        name.alias("user_name"),
        "age",
        joined.alias("date_joined"),
    )
    return out, [], []


_KINDS = {"pin": _pin, "geo": _geo, "user": _user}


def clean_frame(engine: Engine, kind: Kind, df: Any) -> CleanedFrame:
    """Stage 2 over a DataFrame of :func:`pinpipe.clean.parse.raw_schema` rows (see :class:`CleanedFrame`)."""
    F, Window = engine.F, engine.Window
    cleaned, notes, _ = _KINDS[kind](F, df)
    silver = SILVER_SCHEMAS[kind].names
    good = F.col("reason").isNull()
    # one window order for everything (one sort): the winner is the row with no next row in that order
    earliest = Window.partitionBy("ind", "_bad").orderBy(
        F.col("partition").asc(), F.col("offset").asc(), F.col("topic").asc()
    )
    with_bad = cleaned.withColumn("_bad", ~good)
    differs = None
    for name in silver[1:]:
        same = F.col(name).eqNullSafe(F.lag(F.col(name), 1).over(earliest))
        differs = ~same if differs is None else (differs | ~same)
    assert differs is not None
    out = with_bad.select(
        *PROVENANCE_COLUMNS,
        "reason",
        *silver,
        (good & F.lead(F.lit(1), 1).over(earliest).isNull()).alias("_win"),
        (good & (F.row_number().over(earliest) > 1) & differs).alias("_differs"),
        (good & (F.row_number().over(earliest) == 1) & F.lead(F.lit(1), 1).over(earliest).isNotNull()).alias("_first"),
        *(F.col(f"_note{i}") for i in range(len(notes))),
    )
    return CleanedFrame(out, tuple(notes))


def clean_table(engine: Engine, kind: Kind, rows: pa.Table) -> pa.Table:
    """Stage 2 over Arrow rows of :func:`pinpipe.clean.parse.raw_schema`: :func:`clean_frame` collected as one
    Arrow table (columns as :class:`CleanedFrame`, ``_note<i>`` meaning ``NOTES[kind][i]``). Called by
    :func:`pinpipe.clean.clean_records`; through :meth:`Engine.collect`, so DuckDB generates the SQL once per kind."""

    def build(frames: Any) -> dict[str, Any]:
        cleaned = clean_frame(engine, kind, frames["rows"])
        if cleaned.notes != NOTES[kind]:  # pragma: no cover - a rule changed without NOTES
            raise AssertionError(f"{kind}: clean_frame notes {cleaned.notes} differ from NOTES")
        return {"cleaned": cleaned.df}

    return engine.collect(f"clean:{kind}", {"rows": rows}, build)["cleaned"]
