"""A real API server whose event log fails: every failure is a 503 with Retry-After (REST 50003 when a retry may
succeed, 50002 otherwise), never a 2xx — the produce routes of both dialects, ``GET /topics/{topic}`` (which asks
the log) and ``/healthz``. Two ways to make the log fail: a real Kafka broker (Tansu) stopped under ``pinpipe api``,
and an in-memory log failed on command inside a uvicorn server process (MemoryLog's own fault injection, plus a
fatal and a foreign error the memory log cannot produce by itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from tests.fixtures.services import free_port, tansu_broker, wait_for_port
from tests.integration.test_api_wire import pinpipe_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GEO = {"ind": 1, "timestamp": "2020-08-28 03:52:47", "latitude": 1.0, "longitude": 2.0, "country": "X"}
HEADERS = {"content-type": "application/vnd.kafka.json.v2+json"}
TOPIC = "0affea73130b.geo"
STREAM = "streaming-0affea73130b-geo"

SERVER = """
import sys, threading, uvicorn
from pinpipe.config import load_settings
from pinpipe.errors import CorruptStateError
from pinpipe.ingest.app import create_app
from pinpipe.log.memory import MemoryLog

class FaultyLog(MemoryLog):
    fault = None
    def append(self, topic, values, keys=None):
        if self.fault is not None:
            raise self.fault
        return super().append(topic, values, keys)

log = FaultyLog("outage")
FAULTS = {
    "fail": log.fail,
    "recover": log.recover,
    "corrupt": lambda: setattr(log, "fault", CorruptStateError("record 7 of geo/0 does not check", offset=7)),
    "foreign": lambda: setattr(log, "fault", OSError(28, "No space left on device")),
    "clear": lambda: setattr(log, "fault", None),
}

def control():
    for line in sys.stdin:
        FAULTS[line.strip()]()
        print("done", flush=True)

threading.Thread(target=control, daemon=True).start()
uvicorn.run(create_app(load_settings(), log), host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop",
            http="httptools", log_level="warning")
"""


def _produce(base: str) -> requests.Response:
    body = orjson.dumps({"records": [{"value": GEO}, {"value": {**GEO, "ind": 2}}]})
    return requests.post(f"{base}/topics/{TOPIC}", data=body, headers=HEADERS, timeout=30)


def _put(base: str) -> requests.Response:
    return requests.put(f"{base}/streams/{STREAM}/record", json={"Data": GEO, "PartitionKey": "p"}, timeout=30)


def _assert_rest_down(resp: requests.Response, code: int) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert resp.headers["content-type"] == "application/vnd.kafka.v2+json"
    assert resp.json()["error_code"] == code, resp.text


@pytest.mark.timeout(120)
def test_kafka_stopped_under_a_running_api(tmp_path: Path) -> None:
    with tansu_broker(tmp_path / "tansu") as broker:
        log_url = f"kafka://127.0.0.1:{broker.port}?timeout_ms=2000"
        with pinpipe_api(tmp_path / "api", "--log", log_url) as api:
            ok = _produce(api.url)
            assert ok.status_code == 200
            assert [o["offset"] for o in ok.json()["offsets"]] == [0, 1]
            broker.stop()
            _assert_rest_down(_produce(api.url), 50003)
            _assert_rest_down(requests.get(f"{api.url}/topics/{TOPIC}", timeout=30), 50003)
            kin = _put(api.url)
            assert kin.status_code == 503 and kin.json()["__type"] == "ServiceUnavailable"
            assert kin.headers["retry-after"] == "1"
            assert requests.get(f"{api.url}/healthz", timeout=30).status_code == 503
        output = api.output()
    assert "Exception in ASGI application" not in output and "Traceback" not in output, output


@pytest.fixture
def faulty_api(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=dict(os.environ),
        )
    try:
        wait_for_port(port, 30, proc)  # type: ignore[arg-type]
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(20)
    assert "Exception in ASGI application" not in log_path.read_text()


def _inject(proc: subprocess.Popen[str], fault: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(fault + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


def test_every_failure_of_the_log_is_a_503_never_a_200(faulty_api: tuple[str, subprocess.Popen[str]]) -> None:
    base, proc = faulty_api
    assert _produce(base).status_code == 200
    assert requests.get(f"{base}/topics/{TOPIC}", timeout=10).status_code == 200

    _inject(proc, "fail")  # unavailable: retrying may succeed
    _assert_rest_down(_produce(base), 50003)
    _assert_rest_down(requests.get(f"{base}/topics/{TOPIC}", timeout=10), 50003)
    assert _put(base).status_code == 503
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 503
    _inject(proc, "recover")
    assert _produce(base).json()["offsets"][0]["offset"] == 2

    for fault in ("corrupt", "foreign"):  # a fatal error of the log, and an error from outside the tree
        _inject(proc, fault)
        down = _produce(base)
        _assert_rest_down(down, 50002)
        assert "the event log failed" in down.json()["message"]
        kin = _put(base)
        assert kin.status_code == 500 and kin.json()["__type"] == "InternalFailure", kin.text
        _inject(proc, "clear")
    assert _produce(base).json()["offsets"][0]["offset"] == 4  # nothing of the refused requests was stored
