"""The API under a real uvicorn server on loopback: the original's request code and the emulator against it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import uvicorn

from pinpipe.config import load_settings
from pinpipe.emulate.emulator import EmulateOptions, emulate, select_offsets
from pinpipe.ingest.app import create_app
from pinpipe.log import EventLog, open_log
from pinpipe.log.memory import MemoryLog
from pinpipe.source.database import create_source_engine, create_tables, insert_rows
from tests.fixtures.services import free_port

PREFIX = "0affea73130b"
ROWS = 40


@contextlib.contextmanager
def serve(event_log: EventLog) -> Iterator[str]:
    port = free_port()
    app = create_app(load_settings(), event_log)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _rows(i: int) -> dict[str, tuple[Any, ...]]:
    when = dt.datetime(2020, 8, 28, 3, 52, 47) + dt.timedelta(days=i)
    return {
        "pin": (
            i,
            f"uid-{i}",
            f"title {i}",
            "desc, with comma",
            "poster",
            "15.1k",
            "a,b",
            "image",
            "src",
            1,
            "Local save in /data/x",
            "art",
        ),
        "geo": (i, when, -89.9787 + i, -173.293, "Albania"),
        "user": (i, "Abigail", "Ali", 20 + i % 30, when - dt.timedelta(days=900)),
    }


@pytest.fixture
def source_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = create_source_engine(url)
    with engine.begin() as conn:
        create_tables(conn)
        for kind in ("pin", "geo", "user"):
            insert_rows(conn, kind, [_rows(i)[kind] for i in range(ROWS)])
    return url


def test_selection_matches_the_original_sequence() -> None:
    random.seed(100)  # the original: module-level random, a sleep draw then the row draw per loop
    original = []
    for _ in range(50):
        random.randrange(0, 2)
        original.append(random.randint(0, 11000))
    assert select_offsets(100, 50, 11154) == original
    assert select_offsets(100, 50, 40) == [o % 40 for o in original]


def test_the_original_request_code_lands_records(tmp_path: Path) -> None:
    log = open_log(f"file://{tmp_path / 'log'}")
    pin_result = dict(
        zip(
            [
                "index",
                "unique_id",
                "title",
                "description",
                "poster_name",
                "follower_count",
                "tag_list",
                "is_image_or_video",
                "image_src",
                "downloaded",
                "save_location",
                "category",
            ],
            _rows(7)["pin"],
            strict=True,
        )
    )
    geo_result = dict(zip(["ind", "timestamp", "latitude", "longitude", "country"], _rows(7)["geo"], strict=True))
    user_result = dict(zip(["ind", "first_name", "last_name", "age", "date_joined"], _rows(7)["user"], strict=True))
    with serve(log) as base:
        for name, result in (("pin", pin_result), ("geo", geo_result), ("user", user_result)):
            invoke_url = f"{base}/test/topics/{PREFIX}.{name}"
            payload = json.dumps({"records": [{"value": result}]}, default=str)
            headers = {"Content-Type": "application/vnd.kafka.json.v2+json"}
            response = requests.request("POST", invoke_url, headers=headers, data=payload)
            assert response.status_code == 200, response.text
            assert response.json()["offsets"] == [{"partition": 0, "offset": 0, "error_code": None, "error": None}]
        invoke_url = f"{base}/test/streams/streaming-{PREFIX}-geo/record"
        payload = json.dumps(
            {"StreamName": "YourStreamName", "Data": geo_result, "PartitionKey": "partition-1"}, default=str
        )
        response = requests.request("PUT", invoke_url, headers={"Content-Type": "application/json"}, data=payload)
        assert response.status_code == 200, response.text
        assert response.json()["ShardId"] == "shardId-000000000000"
    stored = log.read(f"{PREFIX}.geo", 0, 0)
    assert len(stored) == 1
    assert orjson.loads(stored[0].value) == {**geo_result, "timestamp": "2020-09-04 03:52:47"}
    assert stored[0].key == b"7"
    assert [r.value for r in log.read(f"streaming-{PREFIX}-geo", 0, 0)] == [stored[0].value]
    log.close()


@pytest.mark.parametrize(("dialect", "per_request"), [("batch", 1), ("batch", 4), ("stream", 1), ("stream", 5)])
def test_emulator_sends_and_logs(source_db: str, tmp_path: Path, dialect: str, per_request: int) -> None:
    log = MemoryLog(f"emulate-{dialect}-{per_request}-{time.time_ns()}")
    send_log = tmp_path / "send.jsonl"
    with serve(log) as base:
        summary = emulate(
            EmulateOptions(
                dialect="batch" if dialect == "batch" else "stream",
                api=f"{base}/test",
                db_url=source_db,
                count=20,
                concurrency=4,
                records_per_request=per_request,
                send_log=send_log,
            )
        )
    assert summary.records_acked == 60 and summary.requests_failed == 0
    expected = [o for o in select_offsets(100, 20, ROWS)]
    topic = f"{PREFIX}.user" if dialect == "batch" else f"streaming-{PREFIX}-user"
    stored = sorted(orjson.loads(r.value)["ind"] for r in log.read(topic, 0, 0))
    assert stored == sorted(expected)
    events = [json.loads(line) for line in send_log.read_text().splitlines()]
    acked = [e for e in events if e["event"] == "acked"]
    assert sum(len(e["records"]) for e in acked) == 60
    user_acks = {(r["ind"], r["offset"]) for e in acked if e["topic"] == topic for r in e["records"]}
    by_offset = {r.offset: orjson.loads(r.value)["ind"] for r in log.read(topic, 0, 0)}
    assert {(ind, off) for ind, off in user_acks} == {(ind, off) for off, ind in by_offset.items()}


def test_emulator_retries_through_an_outage(source_db: str, tmp_path: Path) -> None:
    log = MemoryLog(f"emulate-outage-{time.time_ns()}")
    send_log = tmp_path / "send.jsonl"
    with serve(log) as base:
        log.fail()
        threading.Timer(1.0, log.recover).start()
        summary = emulate(
            EmulateOptions(dialect="batch", api=base, db_url=source_db, count=3, concurrency=2, send_log=send_log)
        )
    assert summary.records_acked == 9 and summary.retries > 0
    events = [json.loads(line) for line in send_log.read_text().splitlines()]
    assert any(e["event"] == "error" and e["status"] == 503 and not e["final"] for e in events)


def test_cli_api_and_emulate(source_db: str, tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.fixtures.services import venv_bin, wait_for_port

    port = free_port()
    log_url = f"file://{tmp_path / 'log'}"
    api = subprocess.Popen(
        [venv_bin("pinpipe"), "api", "--port", str(port), "--log", log_url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, 30, api)  # type: ignore[arg-type]
        second = subprocess.run(
            [venv_bin("pinpipe"), "api", "--port", str(free_port()), "--log", log_url],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and "already writing to the event log" in second.stderr
        out = subprocess.run(
            [
                venv_bin("pinpipe"),
                "emulate",
                "--dialect",
                "stream",
                "--api",
                f"http://127.0.0.1:{port}/test",
                "--db",
                source_db,
                "--count",
                "5",
                "--send-log",
                str(tmp_path / "send.jsonl"),
                "--json",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["records_acked"] == 15 and summary["requests_failed"] == 0
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)
    output = api.stdout.read().decode() if api.stdout else ""
    assert api.returncode == 0, output  # a graceful SIGTERM shutdown exits 0
    assert "Traceback" not in output
    log = open_log(log_url)
    assert log.end_offset(f"streaming-{PREFIX}-pin", 0) == 5
    log.close()
