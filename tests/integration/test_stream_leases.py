"""Stream workers on a Kinesis log (moto) sharing its shards through DynamoDB leases (moto), each its own
``pinpipe stream`` process: one is SIGKILLed mid-run, the other takes its leases over when they expire, and silver
ends equal to the oracle — nothing lost, one row per ind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.kinesis import KinesisLog
from pinpipe.log.leases import LeaseTable
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, RAW_TABLES, stream_name
from tests.fixtures.services import Service, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _worker(moto: Service, log_url: str, lake_url: str, leases: str, prefix: str, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    argv = [sys.executable, "-m", "pinpipe", "stream", "--log", log_url, "--lake", lake_url, "--prefix", prefix]
    argv += ["--leases", leases, "--lease-seconds", "3", "--max-batch", "100", "--max-wait-ms", "50"]
    argv += ["--compact-every", "off", "--group", "g"]
    return subprocess.Popen(argv, env=env, stdout=out.open("wb"), stderr=subprocess.STDOUT)


def _silver_inds(lake: Lake) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for kind in KINDS:
        table = delta.read_table(lake, "silver", kind, columns=["ind"])
        out[kind] = table.column("ind").to_pylist() if table is not None else []
    return out


def test_a_killed_worker_s_leases_move_to_the_other_and_nothing_is_lost(moto: Service, tmp_path: Path) -> None:
    prefix = f"l{uuid.uuid4().hex[:8]}"
    log_url = f"kinesis://us-east-1?endpoint={moto.url}&commits={tmp_path / 'commits'}"
    leases = f"dynamodb://leases-{prefix}?region=us-east-1&endpoint={moto.url}"
    log = KinesisLog.from_url(log_url)
    log.ensure_topics([stream_name(prefix, k) for k in KINDS], partitions=2)
    sent = send_list(600, 31, resend_rate=0.05, conflict_rate=0.05, faults=0.03).by_kind()
    half = {kind: records[: len(records) // 2] for kind, records in sent.items()}
    rest = {kind: records[len(records) // 2 :] for kind, records in sent.items()}

    def append(part: dict[str, list[object]]) -> None:
        for kind, records in part.items():
            key = RAW_TABLES[kind].key  # type: ignore[index]
            keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
            log.append(stream_name(prefix, kind), [orjson.dumps(r) for r in records], keys)  # type: ignore[arg-type]

    append(half)  # type: ignore[arg-type]
    lake_url = f"file://{tmp_path / 'lake'}"
    (tmp_path / "lake").mkdir()
    a = _worker(moto, log_url, lake_url, leases, prefix, tmp_path / "a.log")
    b = _worker(moto, log_url, lake_url, leases, prefix, tmp_path / "b.log")
    table = LeaseTable.from_url(leases)
    try:
        deadline = time.monotonic() + 90
        while True:  # balanced: each holds three of the six shards, and some batches are in silver
            held = Counter(
                lease.owner
                for lease in (table.all() if _exists(table) else [])
                if not lease.key.startswith("worker:") and lease.expires > time.time()
            )
            if sorted(held.values()) == [3, 3] and sum(len(v) for v in _silver_inds(Lake(lake_url)).values()) > 0:
                break
            assert a.poll() is None and b.poll() is None, (tmp_path / "a.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the two workers never both held leases"
            time.sleep(0.3)
        a.send_signal(signal.SIGKILL)  # mid-run: its leases stay held until they expire
        a.wait(10)
        append(rest)  # type: ignore[arg-type]
        expected = expected_output(sent)
        lake = Lake(lake_url)
        deadline = time.monotonic() + 120
        while True:
            inds = _silver_inds(lake)
            if all(len(inds[k]) == len(expected.silver[k]) for k in KINDS):
                break
            assert b.poll() is None, (tmp_path / "b.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"silver never caught up: { ({k: len(v) for k, v in inds.items()}) }"
            time.sleep(0.5)
        alive = {
            lease.owner for lease in table.all() if not lease.key.startswith("worker:") and lease.expires > time.time()
        }
        assert len(alive) == 1, "the killed worker's leases were not taken over"
    finally:
        for proc in (a, b):
            stop_process(proc, timeout=30)
        log.close()
    assert b.returncode == 0, (tmp_path / "b.log").read_text()[-3000:]
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        inds = silver.column("ind").to_pylist()
        assert len(inds) == len(set(inds)), f"{kind}: an ind twice in silver"
        got = silver.select(expected.silver_table(kind).column_names).sort_by("ind").to_pylist()
        assert got == expected.silver_table(kind).to_pylist(), kind


def _exists(table: LeaseTable) -> bool:
    try:
        table.all()
        return True
    except Exception:  # the first worker has not created the table yet
        return False
