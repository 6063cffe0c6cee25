"""Rejected requests keep no memory: a real ``pinpipe api`` process answers 300 requests whose record has a new
~1 MiB unknown field name each (half Kafka REST, half Kinesis) with 422/400, and its resident memory grows by
less than 50 MB (it grew by ~300 MB when the validator remembered every rejected record shape)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from pinpipe.config import DEFAULT_PREFIX
from pinpipe.tables import stream_name, topic_name
from tests.fixtures.services import free_port, wait_for_port

REQUESTS = 300
NAME_BYTES = 1_000_000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc status")


def _reject(client: httpx.Client, i: int) -> None:
    name = f"{i:04d}" + "x" * NAME_BYTES
    if i % 2:
        stream = stream_name(DEFAULT_PREFIX, "geo")
        body = b'{"PartitionKey": "k", "Data": {"ind": 1, "%s": 1}}' % name.encode()
        resp = client.put(f"/streams/{stream}/record", content=body)
        assert resp.status_code == 400, resp.text[:300]
    else:
        body = b'{"records": [{"value": {"ind": 1, "%s": 1}}]}' % name.encode()
        headers = {"Content-Type": "application/vnd.kafka.json.v2+json"}
        resp = client.post(f"/topics/{topic_name(DEFAULT_PREFIX, 'geo')}", content=body, headers=headers)
        assert resp.status_code == 422, resp.text[:300]
    assert f"unknown_field:{name[:100]}…" in resp.text


def test_rejected_records_with_huge_unknown_field_names_keep_no_memory(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    api = subprocess.Popen(
        [sys.executable, "-m", "pinpipe", "api", "--port", str(port), "--log", f"file://{tmp_path / 'log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        wait_for_port(port, 60, api)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for i in range(20):  # warm up: buffers and allocator arenas reach their working size
                _reject(client, 10_000 + i)
            before = _rss_mb(api.pid)
            for i in range(REQUESTS):
                _reject(client, i)
            after = _rss_mb(api.pid)
    finally:
        api.terminate()
        api.wait(30)
    print(f"API RSS {before:.0f} MB before, {after:.0f} MB after {REQUESTS} rejected requests")
    assert after - before < 50, f"RSS grew by {after - before:.0f} MB over {REQUESTS} rejected requests"
