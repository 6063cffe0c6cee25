"""``pinpipe sink`` resumes from what its lake holds, never from the log's committed position of its group alone.

A sink that landed a log into lake A with group ``g`` left ``g``'s positions at the log's end. Landing the same
log with the same group into a new, empty lake B (a fresh or restored lake) must land every record in B; taking
the group's position would land nothing and exit 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.tables import topic_name
from tests.fixtures.landed import assert_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _sink(log: Path, lake: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    argv = ["sink", "--log", str(log), "--lake", str(lake), "--group", "g", "--until-idle", "--flush-seconds", "0.2"]
    return subprocess.run(
        [sys.executable, "-m", "pinpipe", *argv], env=env, capture_output=True, text=True, timeout=100
    )


def test_a_new_lake_gets_every_record_although_the_group_committed_the_end(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    topics = [topic_name("r", "pin"), topic_name("r", "geo")]
    log.ensure_topics(topics, partitions=2)
    for topic in topics:
        values = [orjson.dumps({"ind": i, "topic": topic}) for i in range(300)]
        log.append(topic, values, [str(i).encode() for i in range(300)])
    first = _sink(tmp_path / "log", tmp_path / "lake-a")
    assert first.returncode == 0, first.stderr[-3000:]
    assert assert_exactly_once(Lake(str(tmp_path / "lake-a")), log, "g", topics) == 600

    second = _sink(tmp_path / "log", tmp_path / "lake-b")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "committed position is ahead of what this lake holds" in second.stderr
    assert assert_exactly_once(Lake(str(tmp_path / "lake-b")), log, "g", topics) == 600
    again = _sink(tmp_path / "log", tmp_path / "lake-b")  # and a restart on B adds nothing
    assert again.returncode == 0 and assert_exactly_once(Lake(str(tmp_path / "lake-b")), log, "g", topics) == 600
    log.close()
