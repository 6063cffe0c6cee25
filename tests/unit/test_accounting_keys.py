"""Accounting reads a stream log's keys as validation and cleaning do: a hostile key written straight to the log
(bypassing the API) is counted as a record without a usable key, never a crash of ``int()``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa

from pinpipe.checks.accounting import account
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.tables import SILVER_SCHEMAS, stream_app_id, stream_name


def test_a_5000_digit_key_in_the_log_is_no_crash(tmp_path: Path) -> None:
    topic = stream_name("k", "user")
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic], 1)
    huge = b"9" * 5000
    log.append(topic, [orjson.dumps({"ind": huge.decode()}), orjson.dumps({"ind": 7})], [huge, b"7"])
    (tmp_path / "lake").mkdir()
    lake = Lake(f"file://{tmp_path / 'lake'}")
    row = {name: None for name in SILVER_SCHEMAS["user"].names} | {"ind": 7}
    silver = pa.Table.from_pylist([row], schema=SILVER_SCHEMAS["user"])
    delta.merge_silver(lake, "user", silver, app_txns={stream_app_id(topic, 0): 2})
    report = account(lake, "k", event_log=log)
    kinds = {k.kind: k for k in report.kinds}
    assert kinds["user"].valid_inds == 1  # the 5,000-digit key is not a usable key
    log.close()
