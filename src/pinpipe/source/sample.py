"""The bundled real sample: rows of the original database, dirty exactly as the original holds them.

``src/pinpipe/data/<table>.jsonl.gz`` holds 2,475 ``pinterest_data``, 2,504 ``geolocation_data`` and 2,727
``user_data`` rows recovered from public outputs of the original project (one JSON object per line, columns
in ``SELECT *`` order, datetimes as ``YYYY-MM-DD HH:MM:SS``, SQL NULL as JSON null).

Callers: :mod:`pinpipe.source.load` (``pinpipe source init --from sample``, the default), the generator
(:mod:`pinpipe.synth.generate` draws its text vocabulary from here) and tests that measure the real rates.
"""

from __future__ import annotations

import gzip
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import orjson

from pinpipe.tables import RAW_TABLES, Kind

SAMPLE_ROWS: dict[Kind, int] = {"pin": 2475, "geo": 2504, "user": 2727}
"""Rows per kind in the bundled sample."""

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
"""How the sample (and the original emulator, via ``json.dumps(default=str)``) writes a DATETIME."""


def sample_file(kind: Kind) -> str:
    """File name of a kind's sample inside the ``pinpipe.data`` package directory."""
    return f"{RAW_TABLES[kind].name}.jsonl.gz"


@cache
def _raw_lines(kind: Kind) -> tuple[bytes, ...]:
    data = resources.files("pinpipe").joinpath("data", sample_file(kind)).read_bytes()
    return tuple(line for line in gzip.decompress(data).splitlines() if line.strip())


def load_sample_records(kind: Kind) -> list[dict[str, Any]]:
    """The sample rows of ``kind`` as JSON records (datetimes stay ``YYYY-MM-DD HH:MM:SS`` strings)."""
    return [orjson.loads(line) for line in _raw_lines(kind)]


def load_sample(kind: Kind) -> list[dict[str, Any]]:
    """The sample rows of ``kind`` as database rows: dicts in column order, datetime columns as naive
    :class:`datetime.datetime` (the original database's DATETIME has no time zone), NULL as None."""
    table = RAW_TABLES[kind]
    datetime_columns = [name for name, raw_type in table.columns if raw_type == "datetime"]
    rows = []
    for record in load_sample_records(kind):
        row = {name: record.get(name) for name in table.column_names}
        for name in datetime_columns:
            value = row[name]
            if isinstance(value, str):
                row[name] = datetime.strptime(value, DATETIME_FORMAT)
        rows.append(row)
    return rows
