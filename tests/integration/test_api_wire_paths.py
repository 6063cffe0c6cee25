"""Paths and start-up of a real ``pinpipe api`` process: the API-Gateway stage prefix with and without
``--root-path``, ``/healthz`` open to load balancers when a key is required, a port in use."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.integration.test_api_wire import GEO, KAFKA_JSON, pinpipe_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = {"X-API-Key": "s3cret"}


@pytest.mark.parametrize("root_path", ["", "/test"])
def test_original_clients_work_with_and_without_root_path(tmp_path: Path, root_path: str) -> None:
    args = ["--api-key", "s3cret", *(["--root-path", root_path] if root_path else [])]
    with pinpipe_api(tmp_path, *args) as api:
        for stage in ("", "/test"):
            base = f"{api.url}{stage}"
            rest = requests.post(
                f"{base}/topics/0affea73130b.geo",
                json={"records": [{"value": GEO}]},
                headers={**KEY, "Content-Type": KAFKA_JSON},
                timeout=10,
            )
            assert rest.status_code == 200, (stage, rest.text)
            assert rest.json()["offsets"][0]["error_code"] is None
            one = requests.put(
                f"{base}/streams/streaming-0affea73130b-geo/record",
                json={"StreamName": "streaming-0affea73130b-geo", "Data": GEO, "PartitionKey": "p"},
                headers=KEY,
                timeout=10,
            )
            assert one.status_code == 200 and one.json()["ShardId"] == "shardId-000000000000", (stage, one.text)
            many = requests.put(
                f"{base}/streams/streaming-0affea73130b-geo/records",
                json={"Records": [{"Data": GEO, "PartitionKey": "p"}]},
                headers=KEY,
                timeout=10,
            )
            assert many.status_code == 200 and many.json()["FailedRecordCount"] == 0, (stage, many.text)
            assert requests.get(f"{base}/streams", headers=KEY, timeout=10).status_code == 200
            assert requests.get(f"{base}/topics", headers=KEY, timeout=10).json()[0] == "0affea73130b.geo"
            # load balancers probe /healthz without the key
            health = requests.get(f"{base}/healthz", timeout=10)
            assert health.status_code == 200 and health.json()["status"] == "ok", (stage, health.text)
            # everything else still needs it
            refused = requests.post(
                f"{base}/topics/0affea73130b.geo",
                json={"records": [{"value": GEO}]},
                headers={"Content-Type": KAFKA_JSON},
                timeout=10,
            )
            assert refused.status_code == 401 and refused.json()["error_code"] == 40101
            kinesis_refused = requests.put(
                f"{base}/streams/streaming-0affea73130b-geo/record", json={"Data": GEO, "PartitionKey": "p"}, timeout=10
            )
            assert kinesis_refused.status_code == 403
        unknown = requests.post(f"{api.url}/test/nope/x", headers=KEY, timeout=10)
        assert unknown.status_code == 404


def test_docs_are_served_under_the_root_path(tmp_path: Path) -> None:
    with pinpipe_api(tmp_path, "--root-path", "/test") as api:
        page = requests.get(f"{api.url}/test/docs", timeout=10)
        assert page.status_code == 200 and "/test/openapi.json" in page.text
        schema = requests.get(f"{api.url}/test/openapi.json", timeout=10)
        assert schema.status_code == 200 and "/topics/{topic}" in schema.json()["paths"]


def test_a_port_in_use_is_a_configuration_error_before_anything_is_ready(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        log_dir = tmp_path / "log"
        done = subprocess.run(
            [sys.executable, "-m", "pinpipe", "api", "--port", str(port), "--log", f"file://{log_dir}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"127.0.0.1:{port}" in done.stderr and "already in use" in done.stderr and "--port" in done.stderr
    assert "api ready" not in output and "pinpipe.ingest:" not in output  # no log line at all
    assert "Errno" not in output and "Traceback" not in output
    assert not log_dir.exists(), "nothing is created before the port is bound"
