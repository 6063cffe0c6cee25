"""``pinpipe stream`` resumes from silver's own versions, never from the log's committed position of its group.

A worker that streamed a log into lake A with group ``g`` left ``g``'s positions at the log's end. Streaming the same
log with the same group into a new, empty lake B (a fresh or restored lake) must write every record to B; taking
the group's position would write nothing and exit 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, RAW_TABLES, topic_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
PREFIX = "resume"


def _stream(log: Path, lake: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    argv = ["stream", "--log", str(log), "--lake", str(lake), "--group", "g", "--prefix", PREFIX, "--until-idle"]
    return subprocess.run(
        [sys.executable, "-m", "pinpipe", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=200
    )


def _silver(lake: Path) -> dict[str, list[dict[str, object]]]:
    out = {}
    for kind in KINDS:
        table = delta.read_table(Lake(str(lake), access="read"), "silver", kind)
        out[kind] = [] if table is None else table.sort_by("ind").to_pylist()
    return out


def test_a_new_lake_gets_every_record_although_the_group_committed_the_end(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic_name(PREFIX, k) for k in KINDS], partitions=2)
    sent = send_list(400, 5, resend_rate=0.05, conflict_rate=0.05, faults=0.03).by_kind()
    for kind, records in sent.items():
        key = RAW_TABLES[kind].key
        keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
        log.append(topic_name(PREFIX, kind), [orjson.dumps(r) for r in records], keys)
    ends = {topic: [log.end_offset(topic, p) for p in range(n)] for topic, n in log.topics().items()}
    expected = {kind: expected_output(sent).silver_table(kind).to_pylist() for kind in KINDS}

    first = _stream(tmp_path / "log", tmp_path / "lake-a", tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _silver(tmp_path / "lake-a") == expected
    for topic, per_partition in ends.items():  # the group's positions are at the end of the log now
        assert [log.committed("g", topic).get(p, 0) for p in range(len(per_partition))] == per_partition
    log.close()

    second = _stream(tmp_path / "log", tmp_path / "lake-b", tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _silver(tmp_path / "lake-b") == expected  # every record, not none
    assert "committed positions are ahead of silver" in second.stderr  # said, not silent

    again = _stream(tmp_path / "log", tmp_path / "lake-b", tmp_path)  # a restart on B still adds nothing twice
    assert again.returncode == 0, again.stderr[-3000:]
    assert _silver(tmp_path / "lake-b") == expected
    assert "committed positions are ahead of silver" not in again.stderr
