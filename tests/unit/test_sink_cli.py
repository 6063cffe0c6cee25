"""``pinpipe sink`` as a user runs it: a landing run, and clear errors for bad flags, URLs and topics."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pinpipe.cli import main
from pinpipe.lake.store import Lake
from pinpipe.log.memory import MemoryLog
from tests.fixtures.landed import assert_exactly_once


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_sink_lands_a_memory_log_until_idle(workdir: Path) -> None:
    name = uuid.uuid4().hex
    log = MemoryLog(name)
    log.ensure_topics(["x.pin", "x.geo"], 1)
    log.append("x.pin", [b'{"index": %d}' % i for i in range(25)])
    log.append("x.geo", [b'{"ind": 1}'])
    argv = ["sink", "--log", f"memory://{name}", "--lake", "file://lake", "--until-idle", "--flush-seconds", "0.1"]
    assert _run([*argv, "--flush-records", "10", "--group", "g1"]) == 0
    assert assert_exactly_once(Lake("file://lake"), log, "g1") == 26
    assert len(list((workdir / "lake/topics/x.pin/partition=0").glob("*.json"))) == 3


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--flush-records", "0"], "--flush-records 0: Input should be greater than or equal to 1"),
        (["--flush-seconds", "-1"], "--flush-seconds -1.0: Input should be greater than 0"),
        (["--flush-records", "many"], "--flush-records"),
        (["--log", "bogus://x"], "unknown event log URL"),
        (["--lake", "ftp://host/dir"], "unknown lake URL scheme"),
        (["--lake", "s3://"], "names no bucket"),
        (["--lake", "s3:/bucket"], "is malformed: after 's3:' a URL needs '//'"),
        (["--log", "file:log"], "is malformed"),
        (["--lake", "lake:1"], "is not a scheme pinpipe knows"),
        (["--metrics-port", "70000"], "--metrics-port"),
        (["--topics", ","], "--topics names no topic"),
    ],
)
def test_bad_flags_exit_2_naming_the_problem(
    workdir: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    base = ["sink", "--log", f"memory://{uuid.uuid4().hex}", "--lake", "file://lake", "--until-idle"]
    assert _run([*base, *flags]) == 2
    assert needle in " ".join(capsys.readouterr().err.split())


def test_unknown_topic_filter_names_the_topics_the_log_holds(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = uuid.uuid4().hex
    MemoryLog(name).ensure_topics(["x.pin"], 1)
    argv = ["sink", "--log", f"memory://{name}", "--lake", "file://lake", "--until-idle", "--topics", "x.pin,x.gel"]
    assert _run(argv) == 2  # usage: a topic the log does not hold
    err = " ".join(capsys.readouterr().err.split())
    assert "no topic 'x.gel'" in err
    assert "topics it holds: x.pin" in err
