"""The stream worker reading Kinesis (moto) through the event-log port: both stream topics of a kind, paced reads,
silver equals the oracle, and a restarted worker reads nothing twice."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import orjson
import pytest

from pinpipe.engine import DuckDBEngine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.stream.worker import StreamOptions, StreamWorker, open_feed
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, RAW_TABLES, stream_name
from tests.fixtures.services import Service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_stream_from_kinesis_equals_the_oracle(moto: Service, tmp_path: Path) -> None:
    from pinpipe.log.kinesis import KinesisLog

    prefix = f"s{uuid.uuid4().hex[:8]}"
    url = f"kinesis://us-east-1?endpoint={moto.url}&commits={tmp_path / 'commits'}"
    log = KinesisLog.from_url(url)
    log.ensure_topics([stream_name(prefix, k) for k in KINDS], partitions=2)
    sent = send_list(300, 12, resend_rate=0.05, conflict_rate=0.05, faults=0.05).by_kind()
    for kind, records in sent.items():
        key = RAW_TABLES[kind].key
        keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
        log.append(stream_name(prefix, kind), [orjson.dumps(r) for r in records], keys)
    expected = expected_output(sent)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    engine = DuckDBEngine()
    try:
        options = StreamOptions(prefix=prefix, max_batch=200, max_wait_ms=50, idle_stop_s=1.5)
        first = StreamWorker(open_feed(url, prefix, "g"), lake, engine, options)
        first.step()
        first.drain()  # then dies without closing
        second = StreamWorker(open_feed(url, prefix, "g"), lake, engine, options)
        second.run(threading.Event())
    finally:
        engine.close()
        log.close()
    assert first._totals.read + second._totals.read == sum(len(v) for v in sent.values())
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        assert silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
