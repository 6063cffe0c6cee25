"""The embedded log's integrity as an operator meets it, through real processes: ``pinpipe api`` (uvicorn), the
sink, the stream job, ``pinpipe log verify``/``repair`` and ``pinpipe accounting``.

- a byte flipped in the middle of a partition stops the sink and the stream job with an error naming topic,
  partition and offset (exit 65), ``/healthz`` says degraded, ``verify`` lists it, ``repair`` skips it, the
  pipeline continues and accounting balances and reports the skipped record;
- a request answered 503 because the disk filled up (a real file-size limit on the API process) never
  reappears after a restart;
- a data file cut short never makes the log hand out an offset a reader has already committed.
"""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.fixtures.services import embedded_api, free_port

PREFIX = "0affea73130b"
GEO = f"{PREFIX}.geo"
REST_TYPE = "application/vnd.kafka.json.v2+json"
SEGMENT_DATA, SEGMENT_INDEX = f"{0:020d}.data", f"{0:020d}.index"
"""The files of a partition's first segment (base offset 0)."""


def pinpipe(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinpipe", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def geo(ind: int, pad: int = 0) -> dict[str, object]:
    return {
        "ind": ind,
        "timestamp": "2020-08-28 03:52:47",
        "latitude": 12.5,
        "longitude": -70.25,
        "country": "Aruba" + " " * pad,
    }


def post(base: str, records: list[dict[str, object]]) -> tuple[int, list[int]]:
    """POST records to the geo topic: the status and the acknowledged offsets (partition 0: the only one)."""
    body = orjson.dumps({"records": [{"value": r} for r in records]})
    req = urllib.request.Request(f"{base}/topics/{GEO}", body, {"Content-Type": REST_TYPE}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            offsets = orjson.loads(resp.read())["offsets"]
            assert {o["partition"] for o in offsets} == {0}
            return resp.status, [int(o["offset"]) for o in offsets]
    except urllib.error.HTTPError as exc:
        return exc.code, []


def healthz(base: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as resp:
        doc: dict[str, object] = orjson.loads(resp.read())
        return doc


def record_start(partition_dir: Path, offset: int) -> int:
    return int(struct.unpack_from("<Q", (partition_dir / SEGMENT_INDEX).read_bytes(), 8 * offset)[0])


@pytest.mark.slow
def test_a_flipped_byte_stops_sink_and_stream_until_repaired(tmp_path: Path) -> None:
    log_dir, lake, stream_lake = tmp_path / "log", f"file://{tmp_path / 'lake'}", f"file://{tmp_path / 'slake'}"
    db = f"sqlite:///{tmp_path / 'source.db'}"
    assert pinpipe("source", "init", "--db", db).returncode == 0
    send_log = tmp_path / "send.jsonl"
    with embedded_api(log_dir) as (base, _):
        sent = pinpipe("emulate", "--api", base, "--db", db, "--count", "40", "--send-log", str(send_log))
        assert sent.returncode == 0, sent.stderr
        pdir = log_dir / GEO / "0"
        raw = bytearray((pdir / SEGMENT_DATA).read_bytes())
        raw[record_start(pdir, 20) + 40] ^= 0x20  # a byte inside record 20 of 40, as a failing disk leaves it
        (pdir / SEGMENT_DATA).write_bytes(bytes(raw))

        sink = pinpipe("sink", "--log", f"file://{log_dir}", "--lake", lake, "--until-idle", "--flush-seconds", "0.2")
        stream = pinpipe("stream", "--log", f"file://{log_dir}", "--lake", stream_lake, "--until-idle")
        for run in (sink, stream):
            assert run.returncode == 65, run.stderr
            assert f"record 20 of topic '{GEO}' partition 0" in run.stderr
            assert "pinpipe log repair" in run.stderr
        health = healthz(base)
        assert health["status"] == "degraded"
        assert [(c["topic"], c["offset"]) for c in health["corrupt"]] == [(GEO, 20)]  # type: ignore[union-attr]

        verify = pinpipe("log", "verify", "--log", str(log_dir))
        assert verify.returncode == 65
        assert f"corrupt: topic {GEO} partition 0 offset 20" in verify.stdout
        wrong = pinpipe("log", "repair", "--log", str(log_dir), "--topic", GEO, "--partition", "0", "--offset", "19")
        assert wrong.returncode == 2 and "not corrupt" in wrong.stderr  # only corruption is ever skipped
        args = ["--log", str(log_dir), "--topic", GEO, "--partition", "0", "--offset", "20"]
        repair = pinpipe("log", "repair", *args)
        assert repair.returncode == 0, repair.stderr
        assert pinpipe("log", "verify", "--log", str(log_dir)).returncode == 0
        assert healthz(base)["status"] == "ok"

        more = pinpipe(
            "emulate", "--api", base, "--db", db, "--count", "10", "--seed", "5", "--send-log", str(send_log)
        )
        assert more.returncode == 0, more.stderr
        sink = pinpipe("sink", "--log", f"file://{log_dir}", "--lake", lake, "--until-idle", "--flush-seconds", "0.2")
        stream = pinpipe("stream", "--log", f"file://{log_dir}", "--lake", stream_lake, "--until-idle")
        assert sink.returncode == 0, sink.stderr
        assert stream.returncode == 0, stream.stderr
    assert pinpipe("batch", "--lake", lake).returncode == 0
    for target in (lake, stream_lake):
        run = pinpipe(
            "accounting", "--lake", target, "--log", f"file://{log_dir}", "--send-log", str(send_log), "--json"
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = orjson.loads(run.stdout)
        assert report["balanced"]
        row = next(t for t in report["topics"] if t["topic"] == GEO)
        assert (row["in_log"], row["skipped"]) == (49, 1)
        skipped = [f for f in report["findings"] if f["problem"] == "skipped"]
        assert len(skipped) == 1 and "partition 0 offset 20" in skipped[0]["message"]


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the API process before exec: a disk that fills up at `limit` bytes per file
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_request_answered_503_never_reappears(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    acked: list[int] = []
    refused = 0
    with embedded_api(log_dir, preexec=_limit_file_size(48 * 1024)) as (base, _):
        for batch in range(200):
            status, offsets = post(base, [geo(batch * 20 + i, pad=200) for i in range(20)])
            if status == 200:
                acked += offsets
                continue
            assert status == 503, status
            refused += 1
            if refused == 3:
                break
    assert refused == 3, "the file-size limit was never reached"
    assert acked == list(range(len(acked)))
    with embedded_api(log_dir) as (base, _):
        status, offsets = post(base, [geo(99_999)])
        assert status == 200
        assert offsets == [len(acked)], "records of a request answered 503 came back after the restart"
    lake = f"file://{tmp_path / 'lake'}"
    sink = pinpipe("sink", "--log", f"file://{log_dir}", "--lake", lake, "--until-idle", "--flush-seconds", "0.2")
    assert sink.returncode == 0, sink.stderr
    lines = sum(p.read_bytes().count(b"\n") for p in (tmp_path / "lake").rglob("*.json"))
    assert lines == len(acked) + 1


def test_offsets_never_go_back_when_a_data_file_is_cut(tmp_path: Path) -> None:
    log_dir, lake = tmp_path / "log", f"file://{tmp_path / 'lake'}"
    pdir = log_dir / GEO / "0"
    with embedded_api(log_dir) as (base, _):
        assert post(base, [geo(i) for i in range(30)]) == (200, list(range(30)))
    sink = pinpipe("sink", "--log", f"file://{log_dir}", "--lake", lake, "--until-idle", "--flush-seconds", "0.2")
    assert sink.returncode == 0, sink.stderr
    data = pdir / SEGMENT_DATA
    with data.open("r+b") as fh:
        fh.truncate(data.stat().st_size - 5)  # the end of record 29 is gone; the sink has committed 30
    with embedded_api(log_dir) as (base, _):
        assert healthz(base)["status"] == "degraded"
        assert post(base, [geo(30)]) == (200, [30])  # not 29: that offset was read and committed already
    sink = pinpipe("sink", "--log", f"file://{log_dir}", "--lake", lake, "--until-idle", "--flush-seconds", "0.2")
    assert sink.returncode == 0, sink.stderr  # it had landed 29 before the cut; it lands 30 after it
    stream = pinpipe("stream", "--log", f"file://{log_dir}", "--lake", f"file://{tmp_path / 'slake'}", "--until-idle")
    assert stream.returncode == 65 and "record 29 of topic" in stream.stderr

    # Both files cut (the index too): starting would hand out offsets 28 and 29 again — the API refuses.
    with (pdir / SEGMENT_INDEX).open("r+b") as fh:
        fh.truncate(8 * 28)
    with data.open("r+b") as fh:
        fh.truncate(record_start_from_records(data, 28))
    port = free_port()
    refused = pinpipe("api", "--port", str(port), "--log", f"file://{log_dir}", timeout=60)
    assert refused.returncode == 65, refused.stderr
    assert "records 28 to 30 are lost" in refused.stderr
    verify = pinpipe("log", "verify", "--log", str(log_dir))
    assert verify.returncode == 65 and "--offset 28 --count 3" in verify.stdout
    args = ["--log", str(log_dir), "--topic", GEO, "--partition", "0", "--offset", "28", "--count", "3"]
    assert pinpipe("log", "repair", *args).returncode == 0
    with embedded_api(log_dir) as (base, _):
        assert post(base, [geo(31)]) == (200, [31])
    sink = pinpipe("sink", "--log", f"file://{log_dir}", "--lake", lake, "--until-idle", "--flush-seconds", "0.2")
    assert sink.returncode == 0, sink.stderr
    assert pinpipe("batch", "--lake", lake).returncode == 0
    run = pinpipe("accounting", "--lake", lake, "--log", f"file://{log_dir}", "--json")
    assert run.returncode == 0, run.stdout + run.stderr  # records landed before they were lost are not "doubled"
    row = next(t for t in orjson.loads(run.stdout)["topics"] if t["topic"] == GEO)
    assert (row["in_log"], row["skipped"], row["landed"]) == (29, 3, 32)


def record_start_from_records(data: Path, offset: int) -> int:
    """Where record ``offset`` starts, walking the data file's length-prefixed records."""
    raw = data.read_bytes()
    pos = 0
    for _ in range(offset):
        pos += 8 + struct.unpack_from("<I", raw, pos)[0]
    return pos
