"""``pinpipe stream`` as a command: ``--workers 3`` splits an embedded log's partitions across three processes,
``--until-idle`` exits 0 once caught up, Prometheus metrics are served per worker, and bad flags are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, RAW_TABLES, topic_name
from tests.fixtures.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}


def test_three_worker_processes_share_the_partitions(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic_name("cli", k) for k in KINDS], partitions=2)
    sent = send_list(1500, 21, resend_rate=0.05, conflict_rate=0.05, faults=0.03).by_kind()
    for kind, records in sent.items():
        key = RAW_TABLES[kind].key
        keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
        log.append(topic_name("cli", kind), [orjson.dumps(r) for r in records], keys)
    log.close()
    port = free_port()
    scraped: list[str] = []

    def scrape() -> None:  # worker i serves /metrics on port + i
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not scraped:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port + 2}/metrics", timeout=1) as resp:
                    text = resp.read().decode()
                if "pinpipe_stream_batches_total" in text:
                    scraped.append(text)
            except OSError:
                time.sleep(0.1)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    lake_url = f"file://{tmp_path / 'lake'}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pinpipe",
            "stream",
            "--log",
            f"file://{tmp_path / 'log'}",
            "--lake",
            lake_url,
            "--prefix",
            "cli",
            "--workers",
            "3",
            "--until-idle",
            "--metrics-port",
            str(port),
            "--max-batch",
            "500",
        ],
        env=_env(),
        capture_output=True,
        timeout=150,
    )
    scraper.join()
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stderr.decode().count("stream stopped") == 3
    assert done.stderr.decode().count("arrow_pool=system") == 3  # each worker runs Arrow on the system allocator
    assert scraped and "pinpipe_stream_lag_records" in scraped[0]
    expected = expected_output(sent)
    for kind in KINDS:
        silver = delta.read_table(Lake(lake_url), "silver", kind)
        assert silver is not None
        assert silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind


def test_bad_flags_are_refused_before_any_work(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "pinpipe", "stream", "--log", "memory://x", "--lake", f"file://{tmp_path}"]
    for extra, needle in ((["--compact-every", "soon"], "compact-every"), (["--workers", "0"], "workers")):
        done = subprocess.run(base + extra, env=_env(), capture_output=True, timeout=60)
        assert done.returncode == 2, done.stderr.decode()
        assert needle in done.stderr.decode()
