"""Stream drill: records through ``pinpipe api`` (embedded log) while the ``pinpipe stream`` worker is SIGKILLed at
random moments and restarted; afterwards silver holds exactly one row per ind and equals the oracle, the quarantine
holds exactly the injected bad records, and the batch path (``pinpipe sink`` + ``pinpipe batch``) built from the
same log has parity with the stream's lake (``pinpipe parity``)."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pinpipe.config import DEFAULT_PREFIX
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output, split_by_api
from pinpipe.tables import KINDS, stream_name, topic_name
from pinpipe.tables import stream_app_id as app_id
from tests.fixtures.services import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

POSTS = 16_667  # × 3 kinds ≈ 50,000 records
KILLS = 4


def _pinpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinpipe", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}


def _post(client: httpx.Client, kind: str, chunk: list[Any], kinesis: bool) -> tuple[bool, str]:
    if kinesis:
        body = {"Records": [{"Data": r, "PartitionKey": str(r.get("ind"))} for r in chunk]}
        resp = client.put(f"/streams/{stream_name(DEFAULT_PREFIX, kind)}/records", json=body)  # type: ignore[arg-type]
        return resp.status_code == 200 and resp.json()["FailedRecordCount"] == 0, resp.text[:200]
    resp = client.post(
        f"/topics/{topic_name(DEFAULT_PREFIX, kind)}",  # type: ignore[arg-type]
        content=orjson.dumps({"records": [{"value": r} for r in chunk]}),
        headers={"Content-Type": "application/vnd.kafka.json.v2+json"},
    )
    return resp.status_code == 200, resp.text[:200]


def _send(base: str, accepted: dict[str, list[Any]], rejected_probe: dict[str, Any], errors: list[str]) -> None:
    """Post every accepted record, 500 per request: even inds through Kafka REST (``<prefix>.<kind>``), odd ones
    through the Kinesis proxy (``streaming-<prefix>-<kind>``), so every ind lives on one topic and "the last one
    sent wins" has one meaning. Then one bad record per kind, which the API must refuse."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for kind, records in accepted.items():
            lanes = [[r for r in records if r["ind" if kind != "pin" else "index"] % 2 == odd] for odd in (0, 1)]
            per_lane = [[(odd, lane[i : i + 500]) for i in range(0, len(lane), 500)] for odd, lane in enumerate(lanes)]
            chunks = [c for pair in itertools.zip_longest(*per_lane) for c in pair if c is not None]
            for odd, chunk in chunks:
                for attempt in range(50):
                    ok, text = _post(client, kind, chunk, bool(odd))
                    if ok:
                        break
                    time.sleep(0.1 * (attempt + 1))
                else:
                    errors.append(f"{kind}: {text}")
        for kind, record in rejected_probe.items():
            resp = client.post(
                f"/topics/{topic_name(DEFAULT_PREFIX, kind)}",
                content=orjson.dumps({"records": [{"value": record}]}),
                headers={"Content-Type": "application/vnd.kafka.json.v2+json"},
            )
            if resp.status_code != 422:
                errors.append(f"bad {kind} record answered {resp.status_code}")


def _caught_up(log: EmbeddedLog, lake: Lake) -> bool:
    for kind in KINDS:
        for topic in (topic_name(DEFAULT_PREFIX, kind), stream_name(DEFAULT_PREFIX, kind)):
            for p in range(log.topics().get(topic, 0)):
                if (delta.txn_version(lake, kind, app_id(topic, p)) or 0) < log.end_offset(topic, p):
                    return False
    return True


def _wait_for_line(path: Path, text: str, offset: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, path.read_text()[-3000:]
        if text.encode() in path.read_bytes()[offset:]:
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not logged within {timeout} s: {path.read_text()[-3000:]}")


def test_stream_worker_survives_sigkills_with_exactly_once_silver(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    env = _env()
    log_url, lake_url, batch_url = (f"file://{tmp_path / n}" for n in ("log", "stream-lake", "batch-lake"))
    sent = send_list(POSTS, 3, resend_rate=0.02, conflict_rate=0.02, faults=0.02, iso_rate=0.1).by_kind()
    accepted, refused = split_by_api(sent)
    assert all(refused[k] for k in KINDS)
    expected = expected_output(accepted)
    probe = {k: refused[k][0].record for k in KINDS}

    port = free_port()
    api_log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        _pinpipe("api", "--log", log_url, "--port", str(port)), stdout=api_log, stderr=subprocess.STDOUT, env=env
    )
    worker_log = tmp_path / "stream.log"
    stream_args = _pinpipe(
        "stream", "--log", log_url, "--lake", lake_url, "--max-batch", "3000", "--max-wait-ms", "100"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_port(port, 30, api)
        errors: list[str] = []
        sender = threading.Thread(target=_send, args=(f"http://127.0.0.1:{port}", accepted, probe, errors))
        kills = 0
        while kills < KILLS:
            offset = worker_log.stat().st_size if worker_log.exists() else 0
            with worker_log.open("ab") as out:
                proc = subprocess.Popen(stream_args, stdout=out, stderr=subprocess.STDOUT, env=env)
            procs.append(proc)
            _wait_for_line(worker_log, "partitions assigned", offset, proc)
            if not sender.is_alive() and kills == 0:
                sender.start()
            time.sleep(rng.uniform(0.3, 2.0))  # somewhere in reading, cleaning or a Delta commit
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        sender.join(120)
        assert not errors, errors
        offset = worker_log.stat().st_size
        with worker_log.open("ab") as out:
            proc = subprocess.Popen(stream_args, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        _wait_for_line(worker_log, "partitions assigned", offset, proc)  # its SIGTERM handler is installed
        event_log = EmbeddedLog(tmp_path / "log")
        lake = Lake(lake_url)
        deadline = time.monotonic() + 90
        while not _caught_up(event_log, lake):
            assert proc.poll() is None, worker_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the stream worker did not catch up"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        for p in [*procs, api]:
            if p.poll() is None:
                p.kill()
                p.wait()
        api_log.close()

    total_sent = sum(len(v) for v in accepted.values())
    assert sum(event_log.end_offset(t, p) for t, n in event_log.topics().items() for p in range(n)) == total_sent
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        inds = silver.column("ind").to_pylist()
        assert len(inds) == len(set(inds)), f"{kind}: an ind twice in silver"
        assert silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
        quarantine = delta.read_table(lake, "quarantine", kind)
        got = Counter(
            (r["reason"], orjson.dumps(orjson.loads(r["raw"]), option=orjson.OPT_SORT_KEYS))
            for r in (quarantine.to_pylist() if quarantine is not None else [])
        )
        want = Counter(
            (q.reason, orjson.dumps(q.record, option=orjson.OPT_SORT_KEYS)) for q in expected.quarantine[kind]
        )
        assert got == want, kind
    # the faults the oracle expected quarantined were really sent (the comparison above is not vacuous)
    assert sum(len(expected.quarantine[kind]) for kind in KINDS) > 0

    # The batch path over the same log: land it, clean it, compare.
    subprocess.run(
        _pinpipe("sink", "--log", log_url, "--lake", batch_url, "--until-idle", "--flush-seconds", "0.5"),
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        _pinpipe("batch", "--lake", batch_url, "--no-gold"), check=True, env=env, capture_output=True, timeout=120
    )
    parity = subprocess.run(
        _pinpipe("parity", "--lake", lake_url, "--lake", batch_url), env=env, capture_output=True, timeout=120
    )
    assert parity.returncode == 0, parity.stdout.decode()[-4000:]
