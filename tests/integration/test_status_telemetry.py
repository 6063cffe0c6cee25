"""What an operator's tooling sees of the long-running processes: ``/metrics`` of the sink and the stream on a
configurable host, with process and build-info metrics beside each stage's own; with ``--log-format json`` every
stderr line — uvicorn's and a failed command's error too — is one JSON object."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from pinpipe import __version__
from tests.fixtures.services import free_port, start, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PINPIPE = [sys.executable, "-m", "pinpipe"]


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}, **extra}


def _scrape(host: str, port: int, wanted: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as resp:
                text: str = resp.read().decode()
            if wanted in text:
                return text
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no {wanted} at http://{host}:{port}/metrics"
        time.sleep(0.2)


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def _wait_up(proc: subprocess.Popen[bytes], host: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while _refused(host, port):
        assert proc.poll() is None, f"exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"nothing on {host}:{port}"
        time.sleep(0.1)


def _build_info(text: str, stage: str) -> None:
    line = next(line for line in text.splitlines() if line.startswith("pinpipe_build_info{"))
    assert f'version="{__version__}"' in line and f'stage="{stage}"' in line and line.endswith(" 1.0"), line
    assert "\nprocess_resident_memory_bytes " in text and "\nprocess_cpu_seconds_total " in text
    arrow = next(line for line in text.splitlines() if line.startswith("pinpipe_arrow_allocated_bytes "))
    assert float(arrow.split()[1]) >= 0, arrow


def test_sink_and_stream_serve_metrics_on_the_configured_host(tmp_path: Path) -> None:
    log, lake = f"file://{tmp_path / 'log'}", f"file://{tmp_path / 'lake'}"
    (tmp_path / "log").mkdir()
    sink_port, stream_port = free_port(), free_port()
    sink = subprocess.Popen(
        [
            *PINPIPE,
            "sink",
            "--log",
            log,
            "--lake",
            lake,
            "--metrics-port",
            str(sink_port),
            "--metrics-host",
            "127.0.0.2",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stream = subprocess.Popen(  # the host from the environment this time
        [*PINPIPE, "--log-format", "json", "stream", "--log", log, "--lake", lake, "--metrics-port", str(stream_port)],
        cwd=tmp_path,
        env=_env(PINPIPE__METRICS__HOST="127.0.0.3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_up(sink, "127.0.0.2", sink_port)
        _wait_up(stream, "127.0.0.3", stream_port)
        _build_info(_scrape("127.0.0.2", sink_port, "pinpipe_build_info"), "sink")
        _build_info(_scrape("127.0.0.3", stream_port, "pinpipe_stream_batches_total"), "stream")
        assert _refused("127.0.0.1", sink_port) and _refused("127.0.0.1", stream_port)
    finally:
        codes = (stop_process(sink, timeout=30), stop_process(stream, timeout=30))
    assert codes == (0, 0)
    assert sink.stderr is not None and stream.stderr is not None
    lines = [orjson.loads(line) for line in stream.stderr.read().decode().splitlines() if line.strip()]
    served = [line for line in lines if line["msg"] == "serving /metrics"]
    assert served == [{**served[0], "host": "127.0.0.3", "port": stream_port}]


def test_json_logs_hold_uvicorn_lines_and_errors(tmp_path: Path) -> None:
    port = free_port()
    argv = [*PINPIPE, "--log-format", "json", "api", "--port", str(port), "--log", f"file://{tmp_path / 'log'}"]
    api = start("api", argv, port, tmp_path, env=_env())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            conn.recv(1024)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        api.stop()
    lines = [line for line in api.log_path.read_text().splitlines() if line.strip()]
    docs = [orjson.loads(line) for line in lines]  # every line is JSON: none from uvicorn's own formatter
    assert any(d["logger"].startswith("uvicorn") and d["level"] == "warning" for d in docs), lines
    assert any(d["msg"] == "listening" for d in docs)

    failed = subprocess.run(
        [*PINPIPE, "--log-format", "json", "status", "--log", str(tmp_path / "no-log"), "--lake", str(tmp_path)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2
    (error,) = [orjson.loads(line) for line in failed.stderr.splitlines()]
    assert error["level"] == "error" and error["error"] == "NotFoundError" and error["exit_code"] == 2
    assert "no event log" in error["msg"] and error["hint"].startswith("point --log")
