"""The three source tables, their raw wire schema, the silver schemas, and topic/stream naming.

A *kind* is one of ``pin``, ``geo``, ``user``. Each kind has a source table (``pinterest_data``,
``geolocation_data``, ``user_data``), a Kafka topic ``<prefix>.<kind>``, a Kinesis stream
``streaming-<prefix>-<kind>``, and silver/quarantine Delta tables ``<lake>/silver/<kind>``,
``<lake>/quarantine/<kind>``.

Raw validation (:func:`validate_raw`, :func:`check_raw`) is the one definition of what *can be a row of the
table*: each column's JSON type and range (:func:`raw_value` — keys are non-negative signed 64-bit integers
(:data:`KEY_RANGE`), every other ``int`` column a signed 64-bit integer (:data:`INT_RANGE`), ``float`` columns
finite doubles, ``flag`` 0/1/true/false, ``text`` a string or a number, ``datetime`` a string). The API rejects
records that fail it (422 REST, 400 Kinesis) and the cleaner quarantines landed lines that fail it, with the same
reason string, and takes its typed values from the same function — so whatever the API accepts, the cleaner can
type, and no value (a 5,000-digit numeral, ``1e999``, ``"NaN"``, a nested object) can make either raise.

What belongs at the API, and what does not: the API checks only what no cleaning could turn into a row — shape,
key, unknown fields, types and ranges. Whether a value is *usable* is a cleaning question: a timestamp that names
no instant (``2020-02-30``, year 10000), coordinates outside [-90, 90]/[-180, 180], a placeholder or an
unparseable ``follower_count`` (``User Info Error``), control characters or megabyte strings in text are accepted
and then quarantined, nulled or kept by the cleaner with a reason or a note (see :mod:`pinpipe.clean.quarantine`),
because SPEC §5 wants such records in quarantine, not refused at the door.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import pyarrow as pa

from pinpipe.errors import ConfigError
from pinpipe.values import BAD, KEY_RANGE, RawType, parse_int, raw_value

Kind = Literal["pin", "geo", "user"]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True)
class RawTable:
    kind: Kind
    name: str
    key: str
    columns: tuple[tuple[str, RawType], ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


RAW_TABLES: dict[Kind, RawTable] = {
    "pin": RawTable(
        "pin",
        "pinterest_data",
        "index",
        (
            ("index", "int"),
            ("unique_id", "text"),
            ("title", "text"),
            ("description", "text"),
            ("poster_name", "text"),
            ("follower_count", "text"),
            ("tag_list", "text"),
            ("is_image_or_video", "text"),
            ("image_src", "text"),
            ("downloaded", "flag"),
            ("save_location", "text"),
            ("category", "text"),
        ),
    ),
    "geo": RawTable(
        "geo",
        "geolocation_data",
        "ind",
        (
            ("ind", "int"),
            ("timestamp", "datetime"),
            ("latitude", "float"),
            ("longitude", "float"),
            ("country", "text"),
        ),
    ),
    "user": RawTable(
        "user",
        "user_data",
        "ind",
        (
            ("ind", "int"),
            ("first_name", "text"),
            ("last_name", "text"),
            ("age", "int"),
            ("date_joined", "datetime"),
        ),
    ),
}

KIND_BY_TABLE: dict[str, Kind] = {t.name: k for k, t in RAW_TABLES.items()}

# ---------------------------------------------------------------------------------------------- naming

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can name topics and streams; raise ConfigError otherwise."""
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"topic prefix {prefix!r} is not valid",
            hint="use 1-100 characters from A-Z, a-z, 0-9, '_' and '-' (e.g. 0affea73130b)",
        )
    return prefix


def topic_name(prefix: str, kind: Kind) -> str:
    """Kafka topic for a kind: ``<prefix>.<kind>`` (the original's ``0affea73130b.pin``)."""
    return f"{prefix}.{kind}"


BATCH_APP_PREFIX = "pinpipe-batch:"
"""Delta application-transaction ids of the batch job: ``pinpipe-batch:<topic>:<partition>``."""
STREAM_APP_PREFIX = "pinpipe-stream:"
"""Delta application-transaction ids of the stream worker: ``pinpipe-stream:<topic>:<partition>``."""


def batch_app_id(topic: str, partition: int) -> str:
    """The batch job's application-transaction id for one topic-partition (version = the next offset)."""
    return f"{BATCH_APP_PREFIX}{topic}:{partition}"


def stream_app_id(topic: str, partition: int) -> str:
    """The stream worker's application-transaction id for one topic-partition (version = the next offset)."""
    return f"{STREAM_APP_PREFIX}{topic}:{partition}"


def stream_name(prefix: str, kind: Kind) -> str:
    """Kinesis stream for a kind: ``streaming-<prefix>-<kind>``."""
    return f"streaming-{prefix}-{kind}"


def kind_of_topic(prefix: str, topic: str) -> Kind | None:
    """The kind a topic *or* stream name belongs to under ``prefix``, or None if it is not one of ours."""
    for kind in KINDS:
        if topic in (topic_name(prefix, kind), stream_name(prefix, kind)):
            return kind
    return None


# ---------------------------------------------------------------------------------------------- raw check

MAX_NAME_IN_REASON: Final = 100
"""``unknown_field:<name>`` quotes at most this many characters of the name (then ``…``)."""


def _name_in_reason(name: str) -> str:
    return name if len(name) <= MAX_NAME_IN_REASON else name[:MAX_NAME_IN_REASON] + "…"


def check_raw(kind: Kind, value: Any) -> tuple[str, None] | tuple[None, dict[str, Any]]:
    """``(reason, None)`` if ``value`` cannot be a raw row of ``kind``'s table, else ``(None, values)``: every
    column (table order) as :func:`raw_value` gives it. The reasons and their order are :func:`validate_raw`'s."""
    table = RAW_TABLES[kind]
    if not isinstance(value, dict):
        return "not_an_object", None
    key = value.get(table.key)
    if key is None:
        return f"missing_key:{table.key}", None
    ind = parse_int(key, KEY_RANGE)
    if ind is None:
        return f"bad_key:{table.key}", None
    names = table.column_names
    for name in value:
        if name not in names:
            return f"unknown_field:{_name_in_reason(str(name))}", None
    out: dict[str, Any] = {}
    for name, raw_type in table.columns:
        if name == table.key:
            out[name] = ind
            continue
        converted = raw_value(raw_type, value.get(name))
        if converted is BAD:
            return f"bad_type:{name}", None
        out[name] = converted
    return None, out


def validate_raw(kind: Kind, value: Any) -> str | None:
    """Why ``value`` cannot be a raw row of ``kind``'s table, or None if it can.

    Checks in this order; the first failure is the reason (the strings are part of the contract —
    API error messages and quarantine reasons use them verbatim):

    1. ``not_an_object`` — the JSON value is not an object;
    2. ``missing_key:<key>`` — the key column (``index`` for pin, ``ind`` otherwise) is absent or null;
    3. ``bad_key:<key>`` — the key is not an integer in :data:`KEY_RANGE` (a JSON integer or a string of
       digits);
    4. ``unknown_field:<name>`` — the first field (in record order) that the table does not have (a long name
       is cut at :data:`MAX_NAME_IN_REASON` characters);
    5. ``bad_type:<column>`` — the first column (in table order) whose value does not fit (:func:`raw_value`):
       ``int`` takes an integer or a string of digits within :data:`INT_RANGE`; ``float`` a finite number or
       numeral string; ``text`` a string or a number; ``datetime`` a string; ``flag`` 0, 1, true or false. Null
       fits every column except the key, and a missing non-key column counts as null.
    """
    return check_raw(kind, value)[0]


def key_of(kind: Kind, value: dict[str, Any]) -> int:
    """The integer key of a record that passed :func:`validate_raw`."""
    key = parse_int(value[RAW_TABLES[kind].key], KEY_RANGE)
    if key is None:
        raise ValueError(f"{kind} record has no valid key: check it with validate_raw first")
    return key


# ---------------------------------------------------------------------------------------------- silver

FOLLOWER_COUNT_RE = r"([0-9]+)(?:\.([0-9]+))?([kKmMbB]?)"
"""SPEC §5's ``follower_count`` grammar (the whole value): digits, optional decimals, an optional suffix; groups
are the integer part, the decimals and the suffix. Anything else cleans to null with a data-quality note."""
FOLLOWER_SUFFIX_PLACES = {"": 0, "k": 3, "K": 3, "m": 6, "M": 6, "b": 9, "B": 9}
"""Decimal places each suffix shifts by: k/K ×1,000, m/M ×1,000,000, b/B ×1,000,000,000."""

TIMESTAMP = pa.timestamp("us", tz="UTC")

SILVER_SCHEMAS: dict[Kind, pa.Schema] = {
    "pin": pa.schema(
        [
            pa.field("ind", pa.int64(), nullable=False),
            pa.field("unique_id", pa.string()),
            pa.field("title", pa.string()),
            pa.field("description", pa.string()),
            pa.field("follower_count", pa.int64()),
            pa.field("poster_name", pa.string()),
            pa.field("tag_list", pa.string()),
            pa.field("is_image_or_video", pa.string()),
            pa.field("image_src", pa.string()),
            pa.field("save_location", pa.string()),
            pa.field("category", pa.string()),
        ]
    ),
    "geo": pa.schema(
        [
            pa.field("ind", pa.int64(), nullable=False),
            pa.field("country", pa.string()),
            pa.field("coordinates", pa.list_(pa.float64())),
            pa.field("timestamp", TIMESTAMP),
        ]
    ),
    "user": pa.schema(
        [
            pa.field("ind", pa.int64(), nullable=False),
            pa.field("user_name", pa.string()),
            pa.field("age", pa.int64()),
            pa.field("date_joined", TIMESTAMP),
        ]
    ),
}

"""The SPEC columns of each silver table (§5), in order: what every reader of silver sees."""

SILVER_BUCKET = "bucket"
"""The column silver tables carry after the SPEC columns: the table is partitioned by it (``bucket=<b>/``)."""

SILVER_BUCKETS = 16
"""Buckets of a silver table created from now on (recorded in the table's configuration as
:data:`SILVER_BUCKETS_KEY`; a table keeps the count it was created with). A log of ``P`` partitions with ``P``
dividing 16 places an ``ind`` in partition ``bucket % P``, so a worker that owns partition ``p`` writes only the
buckets ``b`` with ``b % P == p``: disjoint slices of every table."""

SILVER_BUCKETS_KEY = "pinpipe.silver.buckets"


def silver_bucket(ind: int, buckets: int) -> int:
    """The bucket of ``ind``: CRC32 of its decimal digits modulo ``buckets`` — the placement the log gives a record
    keyed by ``str(ind).encode()`` (:func:`pinpipe.log.base.partition_for`, the API's keys)."""
    return zlib.crc32(b"%d" % ind) % buckets


def silver_table_schema(kind: Kind) -> pa.Schema:
    """The Delta schema of ``<lake>/silver/<kind>``: :data:`SILVER_SCHEMAS` ``[kind]`` then :data:`SILVER_BUCKET`."""
    return SILVER_SCHEMAS[kind].append(pa.field(SILVER_BUCKET, pa.int32(), nullable=False))


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # landed object key, or "log" for the stream path
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),  # the record exactly as received (one JSON line)
    ]
)
"""Quarantine rows are keyed by (topic, partition, offset): writing the same one twice is a no-op."""
