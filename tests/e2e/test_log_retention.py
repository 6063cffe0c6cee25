"""Retention of the embedded log as an operator meets it, through real processes: ``pinpipe api`` (the log's
writer, small segments and a small size bound from the environment), the emulator with send logs, ``pinpipe sink``,
``pinpipe batch``, ``pinpipe log retention --dry-run``/``verify``, ``pinpipe status`` and ``pinpipe accounting``.

Retention holds everything back while the sink has not landed it; once the sink has committed, the API's periodic
pass deletes old segments (recording their counts), and accounting over api → sink → batch still balances,
reporting the retired records instead of calling them lost.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest

from pinpipe.emulate.emulator import EmulateOptions, emulate
from pinpipe.log import segment
from pinpipe.log.retired import read_retired
from pinpipe.source.database import create_source_engine
from pinpipe.source.load import SampleOrigin, init_source
from tests.fixtures.services import embedded_api, run_pinpipe

PREFIX = "0affea73130b"
SEGMENT_BYTES = 8192
RETENTION_BYTES = 3 * SEGMENT_BYTES
SELECTIONS = 120
ENV = {
    "PINPIPE__LOG__SEGMENT_BYTES": str(SEGMENT_BYTES),
    "PINPIPE__LOG__RETENTION_BYTES": str(RETENTION_BYTES),
    "PINPIPE__LOG__RETENTION_CHECK_MS": "200",
    "PINPIPE__LOG__RETENTION_GROUPS": "pinpipe-sink",  # no stream job here: only the sink's group is waited for
}


def pinpipe(
    *args: str, timeout: float = 180.0, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``pinpipe`` with :data:`ENV` (and ``env``) set."""
    return run_pinpipe(*args, cwd=cwd or Path.cwd(), env={**ENV, **(env or {})}, timeout=timeout)


def _partitions(log_dir: Path) -> list[Path]:
    return sorted(p for p in log_dir.glob("*/0") if p.is_dir())


def _wait_for_retention(log_dir: Path, bound_s: float = 60.0) -> None:
    """Until every partition with more than the bound's worth of data has retired something (bounded)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if all(read_retired(p).log_start > 0 for p in _partitions(log_dir) if len(segment.list_segments(p)) > 3):
            return
        time.sleep(0.1)
    pytest.fail("the API's retention pass did not delete the segments the sink had committed")


def test_retention_after_the_sink_commits_keeps_accounting_balanced(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = create_source_engine(db_url)
    init_source(engine, SampleOrigin())
    engine.dispose()
    log_dir, lake = tmp_path / "log", tmp_path / "lake"
    send_logs = [tmp_path / "send-batch.jsonl", tmp_path / "send-stream.jsonl"]
    with embedded_api(log_dir, env=ENV) as (base, api_out):
        for dialect, send_log in zip(("batch", "stream"), send_logs, strict=True):
            opts = EmulateOptions(
                dialect=dialect, api=base, db_url=db_url, count=SELECTIONS, records_per_request=3, send_log=send_log
            )
            assert emulate(opts).records_acked == 3 * SELECTIONS
        # Nothing is committed yet: the size bound is over, and retention holds every segment back.
        held = pinpipe("log", "retention", "--dry-run", "--json", "--log", str(log_dir))
        assert held.returncode == 0, held.stderr
        plan = orjson.loads(held.stdout)
        assert plan["deleted"] == [] and plan["held"], plan
        assert all(p.name == "0" and read_retired(p).log_start == 0 for p in _partitions(log_dir))
        refused = pinpipe("log", "retention", "--log", str(log_dir))  # the API holds the writer lock
        assert refused.returncode == 2 and "already writing" in refused.stderr
        landed = pinpipe("sink", "--log", str(log_dir), "--lake", str(lake), "--until-idle", "--flush-seconds", "0.5")
        assert landed.returncode == 0, landed.stderr
        _wait_for_retention(log_dir)
        assert "retention held back by a consumer group" in api_out.read_text()
    retired = {p.parent.name: read_retired(p) for p in _partitions(log_dir)}
    assert sum(r.records for r in retired.values()) > 0
    for pdir in _partitions(log_dir):  # under the bound once the sink committed (one append batch of slack)
        assert sum(f.stat().st_size for f in pdir.iterdir() if f.suffix in (".data", ".index")) <= RETENTION_BYTES
    batch = pinpipe("batch", "--lake", str(lake), "--no-gold")
    assert batch.returncode == 0, batch.stderr
    verified = pinpipe("log", "verify", "--log", str(log_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    args = ["accounting", "--lake", str(lake), "--log", str(log_dir), "--json"]
    report = pinpipe(*args, *(a for path in send_logs for a in ("--send-log", str(path))))
    assert report.returncode == 0, report.stdout + report.stderr
    doc = orjson.loads(report.stdout)
    assert doc["balanced"] is True, doc["findings"]
    by_topic = {t["topic"]: t for t in doc["topics"]}
    for topic, r in retired.items():
        row = by_topic[topic]
        assert row["retired"] == r.records
        assert row["in_log"] + row["retired"] == row["acked"] == SELECTIONS
        assert row["landed"] == SELECTIONS
    status = pinpipe("status", "--log", str(log_dir), "--lake", str(lake), "--json")
    assert status.returncode == 0, status.stderr
    look = orjson.loads(status.stdout.splitlines()[0])
    starts = {(p["topic"], p["log_start"], p["retired"]) for p in look["partitions"]}
    assert starts == {(t, r.log_start, r.records) for t, r in retired.items()}
    human = pinpipe("status", "--log", str(log_dir), "--lake", str(lake), env={"COLUMNS": "250"})
    assert human.returncode == 0, human.stderr
    assert "log start" in human.stdout and "retired" in human.stdout, human.stdout
    for topic, r in retired.items():  # each topic's row shows its log start and retired count
        row = next(line for line in human.stdout.splitlines() if f" {topic} " in line)
        cells = [cell.strip() for cell in row.strip("│ ").split("│")]
        assert cells[2:4] == [f"{r.log_start:,}", f"{r.records:,}"], row


def test_settings_are_validated_and_shown(tmp_path: Path) -> None:
    shown = pinpipe("config", timeout=60, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in shown.stdout.splitlines() if "│" in line}
    assert rows["log.segment_bytes"] == str(SEGMENT_BYTES)
    assert rows["log.retention_bytes"] == str(RETENTION_BYTES)
    assert rows["log.retention_groups"] == "['pinpipe-sink']"
    bad = pinpipe("config", timeout=60, cwd=tmp_path, env={"PINPIPE__LOG__RETENTION_BYTES": str(SEGMENT_BYTES)})
    assert bad.returncode == 2
    assert "retention_bytes" in bad.stderr and "twice segment_bytes" in bad.stderr
