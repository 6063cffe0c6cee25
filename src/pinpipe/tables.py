"""The three source tables, their raw wire schema, the silver schemas, and topic/stream naming.

A *kind* is one of ``pin``, ``geo``, ``user``. Each kind has a source table (``pinterest_data``,
``geolocation_data``, ``user_data``), a Kafka topic ``<prefix>.<kind>``, a Kinesis stream
``streaming-<prefix>-<kind>``, and silver/quarantine Delta tables ``<lake>/silver/<kind>``,
``<lake>/quarantine/<kind>``.

Raw validation (:func:`validate_raw`) decides whether a JSON value *can be a row of the table* — the API
rejects records that fail it, and the cleaner quarantines landed lines that fail it, with the same reason
string. It checks JSON shape and types only; whether a timestamp parses or a coordinate is in range is a
cleaning question (see :mod:`pinpipe.clean.quarantine`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyarrow as pa

Kind = Literal["pin", "geo", "user"]
KINDS: tuple[Kind, ...] = get_args(Kind)

RawType = Literal["int", "text", "float", "datetime", "flag"]


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
        from pinpipe.errors import ConfigError

        raise ConfigError(
            f"topic prefix {prefix!r} is not valid",
            hint="use 1-100 characters from A-Z, a-z, 0-9, '_' and '-' (e.g. 0affea73130b)",
        )
    return prefix


def topic_name(prefix: str, kind: Kind) -> str:
    """Kafka topic for a kind: ``<prefix>.<kind>`` (the original's ``0affea73130b.pin``)."""
    return f"{prefix}.{kind}"


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

_INT_RE = re.compile(r"^-?[0-9]+$")
_FLOAT_RE = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def _type_ok(raw_type: RawType, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return raw_type == "flag"
    if raw_type == "int":
        return isinstance(value, int) or (isinstance(value, str) and bool(_INT_RE.match(value.strip())))
    if raw_type == "flag":
        return isinstance(value, int) and value in (0, 1)
    if raw_type == "float":
        return isinstance(value, int | float) or (isinstance(value, str) and bool(_FLOAT_RE.match(value.strip())))
    if raw_type == "text":
        return isinstance(value, str | int | float)
    return isinstance(value, str)  # datetime: content is checked by cleaning


def validate_raw(kind: Kind, value: Any) -> str | None:
    """Why ``value`` cannot be a raw row of ``kind``'s table, or None if it can.

    Checks in this order; the first failure is the reason (the strings are part of the contract —
    API error messages and quarantine reasons use them verbatim):

    1. ``not_an_object`` — the JSON value is not an object;
    2. ``missing_key:<key>`` — the key column (``index`` for pin, ``ind`` otherwise) is absent or null;
    3. ``bad_key:<key>`` — the key is not a non-negative integer (a JSON integer or a string of digits);
    4. ``unknown_field:<name>`` — the first field (in record order) that the table does not have;
    5. ``bad_type:<column>`` — the first column (in table order) whose JSON type does not fit: ``int`` takes an
       integer or a string of digits; ``float`` a number or a numeric string; ``text`` a string or a number;
       ``datetime`` a string; ``flag`` 0, 1, true or false. Null fits every column except the key, and a
       missing non-key column counts as null.
    """
    table = RAW_TABLES[kind]
    if not isinstance(value, dict):
        return "not_an_object"
    key = value.get(table.key)
    if key is None:
        return f"missing_key:{table.key}"
    if isinstance(key, bool) or not _type_ok("int", key) or int(key) < 0:
        return f"bad_key:{table.key}"
    names = table.column_names
    for name in value:
        if name not in names:
            return f"unknown_field:{name}"
    for name, raw_type in table.columns:
        if not _type_ok(raw_type, value.get(name)):
            return f"bad_type:{name}"
    return None


def key_of(kind: Kind, value: dict[str, Any]) -> int:
    """The integer key of a record that passed :func:`validate_raw`."""
    return int(value[RAW_TABLES[kind].key])


# ---------------------------------------------------------------------------------------------- silver

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
