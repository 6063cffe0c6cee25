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


def _appender(log: EmbeddedLog, done: threading.Event) -> None:
    names = list(TOPICS)
    sent = 0
    while sent < TOTAL:
        n = min(500, TOTAL - sent)
        topic = names[(sent // 500) % len(names)]
        log.append(topic, [orjson.dumps({"ind": i, "topic": topic, "pad": "x" * 40}) for i in range(sent, sent + n)])
        sent += n
        time.sleep(0.08)  # spread over ~8 s so that the kills land while records arrive
    done.set()


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
    done = threading.Event()
    feeder = threading.Thread(target=_appender, args=(log, done), daemon=True)
    feeder.start()
    seen: dict[str, str] = {}
    kills = busy = 0
    while kills < KILLS or not done.is_set():
        proc, err = _sink(tmp_path)
        _wait_ready(err, proc)
        time.sleep(rng.uniform(0.05, 0.8))
        now = digests(landed_objects(lake))
        assert {k: now.get(k) for k in seen} == seen, "an object changed or vanished between runs"
        seen.update(now)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        busy += not done.is_set()
        print(f"kill {kills}: {len(now)} objects, appender busy={not done.is_set()}")
        assert kills < 20, "the appender did not finish"
    feeder.join(30)
    proc, err = _sink(tmp_path, "--until-idle")
    assert proc.wait(30) == 0, err.read_text()
    final = digests(landed_objects(lake))
    assert {k: final.get(k) for k in seen} == seen
    assert busy >= 3, "fewer than 3 kills happened while records were arriving"
    resumed = sum(path.read_text().count("resumed after an uncommitted object") for path in tmp_path.glob("sink-*.log"))
    print(f"{kills} kills, {len(final)} objects, {resumed} partitions resumed after an uncommitted object")
    assert assert_exactly_once(lake, log, "pinpipe-sink") == TOTAL
    log.close()
