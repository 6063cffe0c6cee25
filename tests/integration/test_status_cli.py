"""``pinpipe status`` against a running pipeline: real ``pinpipe api``, ``sink`` and ``stream`` processes fed by
``pinpipe emulate``. Lag reaches 0 once they catch up, stays above 0 while the sink is stopped (and ``--max-lag``
or a watch without progress then exits 4), and an absent log or lake exits 2 without creating anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.services import Service, free_port, start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PINPIPE = [sys.executable, "-m", "pinpipe"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}


@dataclass
class Pipeline:
    work: Path
    db: str
    log: str
    lake: str
    api: Service
    sink: Service
    stream: Service

    def emulate(self, dialect: str, count: int, seed: int) -> None:
        argv = [*PINPIPE, "emulate", "--dialect", dialect, "--api", self.api.url, "--db", self.db]
        argv += ["--count", str(count), "--seed", str(seed), "--records-per-request", "20"]
        subprocess.run(argv, cwd=self.work, env=_env(), check=True, capture_output=True, timeout=120)

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*PINPIPE, "status", "--log", self.log, "--lake", self.lake, "--json", *args]
        return subprocess.run(argv, cwd=self.work, env=_env(), capture_output=True, text=True, timeout=120)

    def look(self) -> dict[str, Any]:
        done = self.status()
        assert done.returncode == 0, done.stderr
        look: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
        return look

    def caught_up(self, timeout: float = 90.0) -> dict[str, Any]:
        """The first look in which every partition's sink and stream lag is 0."""
        deadline = time.monotonic() + timeout
        while True:
            look = self.look()
            lags = [(p["sink"]["lag"], (p["stream"] or {"lag": 1})["lag"]) for p in look["partitions"]]
            if lags and all(lag == (0, 0) for lag in lags):
                return look
            assert time.monotonic() < deadline, f"not caught up after {timeout} s: {look}"
            time.sleep(1.0)


def _service(name: str, argv: list[str], port: int, work: Path) -> Service:
    return start(name, argv, port, work, env=_env(), timeout=90)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    work = tmp_path
    db, log, lake = f"sqlite:///{work / 'source.db'}", f"file://{work / 'log'}", f"file://{work / 'lake'}"
    subprocess.run([*PINPIPE, "source", "init", "--db", db], cwd=work, env=_env(), check=True, capture_output=True)
    api_port, sink_port, stream_port = free_port(), free_port(), free_port()
    api = _service("api", [*PINPIPE, "api", "--port", str(api_port), "--log", log], api_port, work)
    services = [api]
    try:
        sink_argv = [*PINPIPE, "sink", "--log", log, "--lake", lake, "--flush-seconds", "0.5"]
        sink = _service("sink", [*sink_argv, "--metrics-port", str(sink_port)], sink_port, work)
        services.append(sink)
        stream_argv = [*PINPIPE, "stream", "--log", log, "--lake", lake, "--max-wait-ms", "100"]
        stream = _service("stream", [*stream_argv, "--metrics-port", str(stream_port)], stream_port, work)
        services.append(stream)
        yield Pipeline(work, db, log, lake, api, sink, stream)
    finally:
        for svc in reversed(services):
            svc.stop()


def test_status_shows_lag_zero_after_catch_up_and_lag_while_the_sink_is_stopped(pipeline: Pipeline) -> None:
    pipeline.emulate("batch", 60, seed=1)
    pipeline.emulate("stream", 60, seed=2)
    look = pipeline.caught_up()
    parts = {p["topic"]: p for p in look["partitions"]}
    assert len(parts) == 6  # 3 Kafka topics and 3 Kinesis streams, one partition each
    assert sum(p["log_end"] for p in parts.values()) == 360
    for p in parts.values():
        assert p["log_end"] > 0
        assert p["sink"]["position"] == p["sink"]["landed"] == p["log_end"]
        assert p["stream"]["position"] == p["log_end"]
    assert {s["kind"] for s in look["silver"]} == {"pin", "geo", "user"}
    assert all(s["last_write"] is not None and s["age_s"] < 600 for s in look["silver"])
    assert look["last_run"] is None and look["stuck"] == []

    pipeline.sink.stop()
    pipeline.emulate("batch", 30, seed=3)
    deadline = time.monotonic() + 60
    while True:  # the stream keeps up; the stopped sink falls behind by exactly what was sent since
        look = pipeline.look()
        kafka = [p for p in look["partitions"] if not p["topic"].startswith("streaming-")]
        if all(p["stream"]["lag"] == 0 for p in kafka):
            break
        assert time.monotonic() < deadline, look
        time.sleep(1.0)
    assert sum(p["sink"]["lag"] for p in kafka) == 90
    assert all(p["sink"]["lag"] > 0 for p in kafka)
    assert all(p["sink"]["position"] == parts[p["topic"]]["log_end"] for p in kafka)

    over = pipeline.status("--max-lag", "0")
    assert over.returncode == 4, over.stderr
    assert "stuck:" in over.stderr and "sink" in over.stderr
    assert {(s["stage"], s["topic"]) for s in orjson.loads(over.stdout)["stuck"]} == {
        ("sink", p["topic"]) for p in kafka
    }

    watched = pipeline.status("--watch", "0.5", "--count", "3", "--stuck-after", "0.5")
    assert watched.returncode == 4, watched.stderr
    looks = [orjson.loads(line) for line in watched.stdout.splitlines()]
    assert len(looks) == 3
    assert looks[0]["stuck"] == []  # one look cannot tell "no progress"
    assert all("no progress" in s["reason"] and s["stage"] == "sink" for s in looks[-1]["stuck"])
    assert len(looks[-1]["stuck"]) == 3


def test_status_of_an_absent_log_or_lake_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    cases = {
        "log": ["--log", str(tmp_path / "no-log"), "--lake", str(tmp_path / "lake")],
        "lake": ["--log", str(tmp_path / "lake"), "--lake", str(tmp_path / "no-lake")],
        "stream lake": ["--log", str(tmp_path / "lake"), "--lake", str(tmp_path / "lake"), "--stream-lake", "nope"],
    }
    for what, args in cases.items():
        done = subprocess.run(
            [*PINPIPE, "status", *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (what, done.stdout, done.stderr)
        assert "does not exist" in done.stderr and "hint:" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake"]
    assert list((tmp_path / "lake").iterdir()) == []


def test_status_reads_the_stream_from_its_own_lake(tmp_path: Path) -> None:
    """A stream worker writing another lake than the sink's: ``--stream-lake`` shows its position; without it the
    sink's lake holds no stream transaction, so no stream is shown."""
    from pinpipe.log.embedded import EmbeddedLog
    from pinpipe.source.sample import load_sample_records
    from pinpipe.tables import KINDS, topic_name

    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic_name("0affea73130b", kind) for kind in KINDS], partitions=2)
    for kind in KINDS:
        records = load_sample_records(kind)[:50]
        log.append(
            topic_name("0affea73130b", kind), [orjson.dumps(r) for r in records], [str(i).encode() for i in range(50)]
        )
    log.close()
    (tmp_path / "lake").mkdir()
    stream_lake = tmp_path / "stream-lake"
    done = subprocess.run(
        [*PINPIPE, "stream", "--log", f"file://{tmp_path / 'log'}", "--lake", f"file://{stream_lake}", "--until-idle"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    base = [*PINPIPE, "status", "--log", str(tmp_path / "log"), "--lake", str(tmp_path / "lake"), "--json"]
    own = subprocess.run([*base, "--stream-lake", str(stream_lake)], cwd=tmp_path, env=_env(), capture_output=True)
    assert own.returncode == 0, own.stderr
    look = orjson.loads(own.stdout)
    assert len(look["partitions"]) == 6 and sum(p["log_end"] for p in look["partitions"]) == 150
    assert all(p["stream"] == {"position": p["log_end"], "lag": 0} for p in look["partitions"])
    assert all(p["sink"]["lag"] == p["log_end"] for p in look["partitions"])  # no sink ran
    written = {(s["lake"], s["kind"]) for s in look["silver"] if s["last_write"]}
    assert written == {(f"file://{stream_lake}", kind) for kind in KINDS}
    other = subprocess.run(base, cwd=tmp_path, env=_env(), capture_output=True)
    assert other.returncode == 0, other.stderr
    assert all(p["stream"] is None for p in orjson.loads(other.stdout)["partitions"])


def test_status_over_kafka_shows_the_sink_group_lag(kafka: Service, tmp_path: Path) -> None:
    """On a Kafka log (Tansu) the sink's committed position is its consumer group's; status shows lag 0 after
    ``sink --until-idle`` and exactly the records appended since."""
    import uuid

    from pinpipe.log.kafka import KafkaLog
    from pinpipe.tables import KINDS, topic_name

    prefix = f"s{uuid.uuid4().hex[:8]}"
    url = f"kafka://127.0.0.1:{kafka.port}"
    topics = [topic_name(prefix, kind) for kind in KINDS]
    log = KafkaLog.from_url(url)
    try:
        log.ensure_topics(topics, partitions=2)

        def send(n: int) -> None:
            for topic in topics:
                log.append(topic, [orjson.dumps({"ind": i}) for i in range(n)], [str(i).encode() for i in range(n)])

        send(40)
        lake = tmp_path / "lake"
        sink = [*PINPIPE, "sink", "--log", url, "--lake", f"file://{lake}", "--topics", ",".join(topics)]
        done = subprocess.run(
            [*sink, "--until-idle", "--flush-seconds", "1"], env=_env(), capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr

        def look() -> list[dict[str, Any]]:
            argv = [*PINPIPE, "status", "--log", url, "--lake", str(lake), "--prefix", prefix, "--json"]
            got = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, timeout=120)
            assert got.returncode == 0, got.stderr
            return [p for p in orjson.loads(got.stdout)["partitions"] if p["topic"] in topics]

        first = look()
        assert len(first) == 6 and sum(p["log_end"] for p in first) == 120
        assert all(p["sink"]["committed"] == p["sink"]["landed"] == p["log_end"] for p in first)
        assert all(p["sink"]["lag"] == 0 and p["stream"] is None for p in first)
        send(10)
        assert sum(p["sink"]["lag"] for p in look()) == 30
    finally:
        log.close()
