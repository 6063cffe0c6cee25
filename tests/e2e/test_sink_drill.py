"""Kill drill: the sink runs as its own process and is SIGKILLed at random moments while records arrive.

Afterwards every offset of the embedded log is in exactly one landed line, and no object ever changed: the
bytes of every object seen before each kill are compared with the final lake.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson

from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from tests.fixtures.landed import assert_exactly_once, digests, landed_objects
from tests.fixtures.services import venv_bin

TOPICS = {"drill.pin": 2, "drill.geo": 1, "streaming-drill-user": 1}
TOTAL = 50_000
KILLS = 4


def _feed(log: EmbeddedLog, first: int, n: int, names: tuple[str, ...] = tuple(TOPICS)) -> None:
    """Append records ``first``..``first+n`` in chunks of 500, round-robin over ``names``, 0.03 s apart."""
    for chunk in range(first, first + n, 500):
        topic = names[(chunk // 500) % len(names)]
        size = min(500, first + n - chunk)
        log.append(
            topic, [orjson.dumps({"ind": i, "topic": topic, "pad": "x" * 40}) for i in range(chunk, chunk + size)]
        )
        time.sleep(0.03)


def _sink(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    err = workdir / f"sink-{time.monotonic_ns()}.log"
    argv = [venv_bin("pinpipe"), "sink", "--log", "file://log", "--lake", "file://lake"]
    argv += ["--flush-records", "300", "--flush-seconds", "0.3", *extra]
    with err.open("wb") as fh:
        proc = subprocess.Popen(argv, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT)
    return proc, err


def _wait_ready(err: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while b"partition ready" not in err.read_bytes():
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < deadline, f"sink not ready after {timeout} s: {err.read_text()}"
        time.sleep(0.02)


def test_sink_survives_random_sigkills_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    log = EmbeddedLog(tmp_path / "log")
    for topic, partitions in TOPICS.items():
        log.ensure_topics([topic], partitions)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    burst = TOTAL // (KILLS + 1)
    seen: dict[str, str] = {}
    for kill in range(KILLS):
        proc, err = _sink(tmp_path)
        _wait_ready(err, proc)
        feeder = threading.Thread(target=_feed, args=(log, kill * burst, burst), daemon=True)
        feeder.start()  # the sink is landing while it is killed
        time.sleep(rng.uniform(0.1, 0.9))
        now = digests(landed_objects(lake))
        assert {k: now.get(k) for k in seen} == seen, "an object changed or vanished between runs"
        seen.update(now)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        feeder.join(60)
    _feed(log, KILLS * burst, TOTAL - KILLS * burst)
    proc, err = _sink(tmp_path, "--until-idle")
    assert proc.wait(60) == 0, err.read_text()
    final = digests(landed_objects(lake))
    assert {k: final.get(k) for k in seen} == seen, "an object changed or vanished after the last kill"
    assert assert_exactly_once(lake, log, "pinpipe-sink") == TOTAL
    resumed = sum(path.read_text().count("resumed after an uncommitted object") for path in tmp_path.glob("sink-*.log"))
    print(f"{KILLS} kills, {len(seen)} objects seen before kills, {len(final)} in the end, {resumed} resumes")
    log.close()


def test_sigterm_lands_what_was_read_commits_and_exits_0(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics(["term.pin"], 1)
    proc, err = _sink(tmp_path, "--flush-seconds", "600", "--flush-records", "100000")
    _wait_ready(err, proc)
    _feed(log, 0, 1_000, ("term.pin",))
    time.sleep(1.0)  # let it read them; nothing is due before 600 s or 100,000 records
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, err.read_text()
    lake = Lake(f"file://{tmp_path / 'lake'}")
    first = digests(landed_objects(lake))
    assert list(first) == ["topics/term.pin/partition=0/term.pin+0+0000000000.json"]
    assert "reason=stop" in err.read_text()
    proc, err = _sink(tmp_path, "--until-idle")
    assert proc.wait(60) == 0, err.read_text()
    assert {k: v for k, v in digests(landed_objects(lake)).items() if k in first} == first
    assert assert_exactly_once(lake, log, "pinpipe-sink") == 1_000
    log.close()
