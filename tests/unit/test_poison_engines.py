"""The known poison values clean identically on DuckDB and on PySpark: the same silver rows, the same quarantined
records with the same reasons, the same counts (stage 1 is shared; stage 2 is the one DataFrame program run on
both engines, so impossible dates, 1 MiB strings, NUL characters and 1,000,000-digit follower counts must mean the
same thing to both)."""

from __future__ import annotations

from typing import Any

import pytest

from pinpipe.clean import clean_records
from pinpipe.clean.records import RawRecord
from pinpipe.engine import open_engine
from pinpipe.tables import KINDS
from tests.fixtures.hostile import known_poison

pytestmark = pytest.mark.integration


def _clean_all(engine_name: str) -> dict[str, Any]:
    known = known_poison()
    out: dict[str, Any] = {}
    with open_engine(engine_name) as engine:
        for kind in KINDS:
            lines = [h.text.encode() for h in known if h.kind == kind]
            res = clean_records(engine, kind, [RawRecord(f"t.{kind}", 0, i, x, "t") for i, x in enumerate(lines)])
            out[kind] = (res.silver.to_pylist(), res.quarantine.to_pylist(), res.stats)
    return out


def test_duckdb_and_spark_clean_the_known_poison_alike() -> None:
    duck, spark = _clean_all("duckdb"), _clean_all("spark")
    for kind in KINDS:
        assert duck[kind][2] == spark[kind][2], kind
        assert duck[kind][1] == spark[kind][1], kind
        assert duck[kind][0] == spark[kind][0], kind
        assert duck[kind][0] and duck[kind][1], kind  # both outcomes occur
