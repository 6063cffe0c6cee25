"""``pinpipe emulate`` mistakes and outages through the real script: each exits with its code and says why.

An API that is down → 75 naming the URL, at once and before anything is sent; a bad option → 2 naming the flag;
a SQLite source that does not exist → 2 with the hint ``pinpipe source init`` (and no file created); an API that
goes away mid-run → 75 saying the API failed; an API that rejects the records → 65.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.services import free_port, wait_for_port

PINPIPE = [sys.executable, "-m", "pinpipe"]


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}, **extra}


def _pinpipe(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PINPIPE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=_env(**env))


def _error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def source_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("emulate-source")
    url = f"sqlite:///{root / 'source.db'}"
    proc = _pinpipe("source", "init", "--db", url, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return url


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [*PINPIPE, "api", "--port", str(port), "--log", str(tmp_path / "log")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        wait_for_port(port, 60, proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_an_api_that_is_down_is_named_and_retryable(source_db: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = _pinpipe("emulate", "--db", source_db, "--api", url, "--send-log", "sends.jsonl", cwd=tmp_path)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert f"cannot reach the API at {url}" in _error(proc)
    assert "nothing was sent" in proc.stderr
    assert time.monotonic() - started < 15  # not 18 s of silent retries
    assert not (tmp_path / "sends.jsonl").exists() or "sent" not in (tmp_path / "sends.jsonl").read_text()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--api", "not-a-url"), "--api 'not-a-url' is not an http:// or https:// URL"),
        (("--api", "http://127.0.0.1:99999"), "has an invalid port"),
        (("--rate", "-3"), "--rate -3.0 is not a rate"),
        (("--count", "-1"), "--count -1 is negative"),
        (("--concurrency", "0"), "--concurrency 0 is outside"),
        (("--records-per-request", "0"), "--records-per-request 0 is outside"),
        (("--dialect", "stream", "--records-per-request", "501"), "is outside 1..500 for the stream dialect"),
        (("--send-log", "no-such-dir/sends.jsonl"), "does not exist"),
    ],
)
def test_bad_options_exit_2_naming_the_flag(
    source_db: str, tmp_path: Path, flags: tuple[str, ...], needle: str
) -> None:
    proc = _pinpipe("emulate", "--db", source_db, *flags, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in _error(proc)
    assert "Traceback" not in proc.stderr


def test_a_missing_sqlite_source_is_fatal_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    proc = _pinpipe("emulate", "--db", f"sqlite:///{db}", "--api", "http://127.0.0.1:1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the source database {db} does not exist" in _error(proc)
    assert "pinpipe source init" in proc.stderr
    assert not db.exists()


def test_an_api_that_goes_away_mid_run_fails_retryable_saying_so(
    source_db: str, tmp_path: Path, api: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, server = api
    sends = tmp_path / "sends.jsonl"
    argv = [*PINPIPE, "emulate", "--db", source_db, "--api", url, "--count", "200", "--rate", "40"]
    argv += ["--send-log", str(sends)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 60
    while not (sends.exists() and '"acked"' in sends.read_text()):  # the API took records, then goes away
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 75, out + err
    error = next(line for line in err.splitlines() if line.startswith("error:"))
    assert f"requests to the API at {url} failed on every attempt" in error
    assert "the API does not answer; retrying" in err  # the retries are not silent
    assert "were not sent" in error  # once the API failed for good, the rest is not retried one by one


def test_records_the_api_rejects_exit_65(
    source_db: str, tmp_path: Path, api: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, _ = api
    proc = _pinpipe(
        "emulate", "--db", source_db, "--api", url, "--count", "2", cwd=tmp_path, PINPIPE__PREFIX="feedbeef0000"
    )
    assert proc.returncode == 65, proc.stdout + proc.stderr
    assert f"the API at {url} rejected 6 of 6 requests" in _error(proc)
