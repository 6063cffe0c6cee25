"""Stream workers as one Kafka consumer group on Tansu: two workers share the partitions, one stops, the other
takes its partitions over (resuming from silver's transaction versions); silver equals the oracle exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.kafka import KafkaLog
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, RAW_TABLES, topic_name
from pinpipe.tables import stream_app_id as app_id
from tests.fixtures.services import Service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _caught_up(log: KafkaLog, lake: Lake, prefix: str, ends: dict[tuple[str, int], int]) -> bool:
    for (topic, p), end in ends.items():
        kind = KINDS[[topic_name(prefix, k) for k in KINDS].index(topic)]
        if (delta.txn_version(lake, kind, app_id(topic, p)) or 0) < end:
            return False
    return True


def _start(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    with log_path.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pinpipe", *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text.encode() not in path.read_bytes():
        assert proc.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not in {path}: {path.read_text()[-3000:]}"
        time.sleep(0.05)


def test_two_workers_in_a_group_rebalance_when_one_stops(kafka: Service, tmp_path: Path) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    url = f"kafka://127.0.0.1:{kafka.port}"
    log = KafkaLog.from_url(url)
    log.ensure_topics([topic_name(prefix, k) for k in KINDS], partitions=2)
    sent = send_list(3000, 4, resend_rate=0.05, conflict_rate=0.05, faults=0.03).by_kind()
    for kind, records in sent.items():
        key = RAW_TABLES[kind].key
        keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
        for i in range(0, len(records), 1000):  # several producer batches, so resumes land inside them
            log.append(topic_name(prefix, kind), [orjson.dumps(r) for r in records[i : i + 1000]], keys[i : i + 1000])
    expected = expected_output(sent)
    ends = {(topic_name(prefix, k), p): log.end_offset(topic_name(prefix, k), p) for k in KINDS for p in range(2)}
    assert sum(ends.values()) == sum(len(v) for v in sent.values())

    lake_url = f"file://{tmp_path / 'lake'}"
    args = [
        "stream",
        "--log",
        url,
        "--lake",
        lake_url,
        "--prefix",
        prefix,
        "--group",
        f"g-{prefix}",
        "--max-batch",
        "400",
        "--max-wait-ms",
        "50",
    ]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = _start(args, logs[0])
    b = _start(args, logs[1])
    try:
        _wait_for(logs[0], "partitions assigned", a)
        _wait_for(logs[1], "partitions assigned", b)
        a.send_signal(signal.SIGTERM)  # a leaves the group after committing its batch in flight
        assert a.wait(30) == 0
        _wait_for(logs[1], "partitions revoked", b)
        lake = Lake(lake_url)
        deadline = time.monotonic() + 90
        while not _caught_up(log, lake, prefix, ends):
            assert b.poll() is None, logs[1].read_text()[-3000:]
            assert time.monotonic() < deadline, logs[1].read_text()[-3000:]
            time.sleep(0.2)
        b.send_signal(signal.SIGTERM)
        assert b.wait(30) == 0
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()

    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        assert silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
        quarantine = delta.read_table(lake, "quarantine", kind)
        got = sorted((r["reason"], r["raw"]) for r in (quarantine.to_pylist() if quarantine is not None else []))
        assert got == sorted((q.reason, orjson.dumps(q.record).decode()) for q in expected.quarantine[kind]), kind
