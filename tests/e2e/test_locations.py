"""Locations through the real ``pinpipe`` script (SPEC §8): a mistyped --lake/--log never reads as success.

Reading commands create nothing and exit 2 naming what is absent; writers create a lake or log only under an
existing parent, saying so in one log line; plain paths are accepted and malformed URLs are explained.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.log.embedded import EmbeddedLog
from pinpipe.tables import KINDS, topic_name
from tests.fixtures.services import Service, run_pinpipe

PINPIPE = [sys.executable, "-m", "pinpipe"]
PREFIX = "0affea73130b"
RECORDS_PER_TOPIC = 50


def _pinpipe(
    *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_pinpipe(*args, cwd=cwd, env=env, timeout=timeout)


def _error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A work dir holding an embedded log with records and a lake the real sink landed them in (``log``, ``lake``)."""
    work = tmp_path_factory.mktemp("locations")
    log = EmbeddedLog(work / "log")
    try:
        log.ensure_topics([topic_name(PREFIX, kind) for kind in KINDS])
        for kind in KINDS:
            log.append(topic_name(PREFIX, kind), [json.dumps({"ind": i}).encode() for i in range(RECORDS_PER_TOPIC)])
    finally:
        log.close()
    proc = _pinpipe("sink", "--log", "./log", "--lake", "./lake", "--until-idle", "--flush-seconds", "0.2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "created the lake directory" in proc.stderr  # a writer says when it creates the lake
    assert len(list((work / "lake" / "topics").rglob("*.json"))) == 3  # plain paths: ./log and ./lake
    yield work


@pytest.mark.parametrize(
    "command",
    [
        ("results",),
        ("report", "--out", "r.html"),
        ("quality",),
        ("accounting",),
        ("batch",),
        ("parity", "--lake", "LAKE"),
    ],
)
def test_reading_commands_on_a_missing_lake_exit_2_and_create_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "typo" / "lake"
    args = [a.replace("LAKE", str(missing)) for a in command]
    proc = _pinpipe(args[0], "--lake", f"file://{missing}", *args[1:], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the lake file://{missing} does not exist" in _error(proc)
    assert "balanced" not in proc.stdout and "passed" not in proc.stdout
    assert not (tmp_path / "typo").exists() and not (tmp_path / "r.html").exists()


def test_batch_on_an_existing_but_empty_lake_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    proc = _pinpipe("batch", "--lake", "lake", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the lake file://{tmp_path / 'lake'} holds neither landed objects nor tables" in _error(proc)
    assert list((tmp_path / "lake").iterdir()) == []


def test_the_quality_gate_fails_a_run_that_read_nothing_unless_allowed(landed: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    subprocess.run(["cp", "-r", str(landed / "lake"), str(lake)], check=True)
    first = _pinpipe("batch", "--lake", str(lake), "--no-gold", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    gate = ("quality", "--lake", str(lake), "--max-quarantine-share", "1")
    assert _pinpipe(*gate, cwd=tmp_path).returncode == 0  # the first run read every landed record
    again = _pinpipe("batch", "--lake", str(lake), "--no-gold", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    empty = _pinpipe(*gate, cwd=tmp_path)
    assert empty.returncode == 65, empty.stdout + empty.stderr
    assert "read no record" in _error(empty) and "--allow-empty" in empty.stderr
    assert "quality gate: FAILED" in empty.stdout
    allowed = _pinpipe(*gate, "--allow-empty", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "quality gate: passed" in allowed.stdout


def test_accounting_with_a_wrong_log_says_the_log_is_missing(landed: Path) -> None:
    proc = _pinpipe("accounting", "--lake", "lake", "--log", "./lgo", cwd=landed)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the event log file://{landed / 'lgo'} does not exist" in _error(proc)
    assert "doubled" not in proc.stdout + proc.stderr
    assert not (landed / "lgo").exists()
    not_a_log = _pinpipe("accounting", "--lake", "lake", "--log", "lake", cwd=landed)
    assert not_a_log.returncode == 2, not_a_log.stdout + not_a_log.stderr
    assert "holds no topic" in _error(not_a_log)
    good = _pinpipe("accounting", "--lake", "lake", "--log", "log", "--allow-lag", cwd=landed)
    assert good.returncode == 0, good.stdout + good.stderr
    no_sends = _pinpipe("accounting", "--lake", "lake", "--send-log", f"file://{landed / 'nope.jsonl'}", cwd=landed)
    assert no_sends.returncode == 2, no_sends.stdout + no_sends.stderr
    assert f"--send-log {landed / 'nope.jsonl'} is not a file" in _error(no_sends)  # a file:// URL is its path


def test_accounting_on_an_empty_lake_is_not_balanced(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    proc = _pinpipe("accounting", "--lake", "lake", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nothing to reconcile" in _error(proc)
    assert "balanced" not in proc.stdout


@pytest.mark.parametrize("command", ["sink", "stream"])
def test_sink_and_stream_fail_on_a_missing_log_and_create_nothing(tmp_path: Path, command: str) -> None:
    proc = _pinpipe(command, "--log", "typo-log", "--lake", "lake", "--until-idle", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the event log file://{tmp_path / 'typo-log'} does not exist" in _error(proc)
    assert "pinpipe api" in proc.stderr  # the hint says who creates a log
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["sink", "stream"])
def test_writers_create_a_lake_only_under_an_existing_parent(landed: Path, tmp_path: Path, command: str) -> None:
    nested = tmp_path / "no-such-parent" / "lake"
    proc = _pinpipe(command, "--log", str(landed / "log"), "--lake", str(nested), "--until-idle", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"its parent directory {nested.parent} does not exist" in _error(proc)
    assert not nested.parent.exists()


def test_api_creates_a_missing_log_only_under_an_existing_parent(tmp_path: Path) -> None:
    refused = _pinpipe("api", "--port", "0", "--log", str(tmp_path / "nope" / "log"), cwd=tmp_path, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "its parent directory" in _error(refused)
    assert not (tmp_path / "nope").exists()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    out = tmp_path / "api.out"
    with out.open("wb") as sink:
        api = subprocess.Popen(
            [*PINPIPE, "api", "--port", "0", "--log", "./log"], cwd=tmp_path, stdout=sink, stderr=sink, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while "api ready" not in out.read_text() and api.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)
    text = out.read_text()
    assert text.count("created the event log directory") == 1, text
    assert (tmp_path / "log" / "topics.json").is_file()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--lake", "s3:/bad"), "lake URL 's3:/bad' is malformed: after 's3:' a URL needs '//'"),
        (("--lake", "file:relative"), "lake URL 'file:relative' is malformed: after 'file:' a URL needs '//'"),
        (("--lake", "gs://bucket/lake"), "unknown lake URL scheme 'gs' in 'gs://bucket/lake'"),
        (("--lake", "lake", "--log", "kafak://host:9092"), "unknown event log URL scheme 'kafak'"),
    ],
)
def test_malformed_urls_say_what_is_wrong(tmp_path: Path, flags: tuple[str, ...], needle: str) -> None:
    command = "sink" if "--log" in flags else "results"
    proc = _pinpipe(command, *flags, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in _error(proc)
    assert "no scheme" not in proc.stderr and "memory://" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_parity_of_two_empty_lakes_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = _pinpipe("parity", "--lake", "a", "--lake", "b", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"lake A (file://{tmp_path / 'a'}) holds neither landed objects nor tables" in _error(proc)
    assert "parity: OK" not in proc.stdout


def test_source_show_reads_a_sqlite_file_only_if_it_exists(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    proc = _pinpipe("source", "show", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the source database {db} does not exist" in _error(proc) and "pinpipe source init" in proc.stderr
    assert not db.exists()


def test_demo_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    proc = _pinpipe("demo", "--data-dir", "data", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--data-dir data is not a directory" in _error(proc)


def test_s3_lakes_must_exist_for_reading(tmp_path: Path, moto: Service) -> None:
    import boto3

    bucket = f"locations-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=bucket)
    env = {"PINPIPE__LAKE__ENDPOINT": moto.url}
    empty = _pinpipe("results", "--lake", f"s3://{bucket}/typo", cwd=tmp_path, env=env)
    assert empty.returncode == 2, empty.stdout + empty.stderr
    assert f"the lake s3://{bucket}/typo holds no object" in _error(empty)
    missing = _pinpipe("quality", "--lake", f"s3://no-{bucket}/lake", cwd=tmp_path, env=env)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "NoSuchBucket" in _error(missing)
