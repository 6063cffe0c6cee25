"""Hostile records end to end, through the real commands: ``pinpipe api`` (a server process on an embedded
``file://`` log) ← one HTTP request per record, through both dialects → ``pinpipe sink`` → ``pinpipe batch`` into
one lake, and ``pinpipe stream`` from the same log into another.

Every record is JSON text from :mod:`tests.fixtures.hostile` — the fixed list of known poison values plus one batch
drawn by hypothesis. Checks: the API answers 200 exactly for the records ``validate_raw`` accepts and 422 (REST) /
400 (Kinesis) for the others, never a 5xx; every command exits 0; ``pinpipe accounting`` balances from the send
log to silver; ``pinpipe parity`` holds between the two lakes; and the batch lake holds exactly what the oracle
says — every accepted record in silver or in quarantine (only for a semantic reason), nothing else.

One pipeline run per test (hypothesis draws one batch, no shrinking): about half a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pinpipe.clean.quarantine import reason_code
from pinpipe.config import DEFAULT_PREFIX
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, Kind, key_of, stream_name, topic_name, validate_raw
from tests.fixtures.hostile import Hostile, hostile_records, known_poison
from tests.fixtures.services import free_port, wait_for_port

GENERATED = 120
REST_TYPE = {"Content-Type": "application/vnd.kafka.json.v2+json"}


def _pinpipe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinpipe", *args],
        env=_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}


def _expect(h: Hostile) -> tuple[Any, int | None]:
    """The record as the API parses it and its key if the API must accept it (None: it must refuse it)."""
    value = h.value()
    if value is None and h.text.strip() != "null":
        return None, None
    return value, (key_of(h.kind, value) if validate_raw(h.kind, value) is None else None)


def _send(api: str, records: list[Hostile], send_log: Path) -> dict[Kind, list[Any]]:
    """Send each record in its own request (even keys through Kafka REST, odd ones and refused records alternately
    through the Kinesis proxy, so each key lives on one topic); write an emulator-format send log; return the
    accepted records per kind in send order."""
    accepted: dict[Kind, list[Any]] = {k: [] for k in KINDS}
    events: list[bytes] = []
    with httpx.Client(base_url=api, timeout=60) as client:
        for i, h in enumerate(records):
            value, key = _expect(h)
            kinesis = (key % 2 == 1) if key is not None else (i % 2 == 1)
            topic = stream_name(DEFAULT_PREFIX, h.kind) if kinesis else topic_name(DEFAULT_PREFIX, h.kind)
            data = h.text or '""'  # the record's JSON text, spliced in as is
            if kinesis:
                body = f'{{"StreamName": "{topic}", "PartitionKey": "k", "Data": {data}}}'
                resp = client.put(f"/streams/{topic}/record", content=body.encode())
            else:
                body = f'{{"records": [{{"value": {data}}}]}}'
                resp = client.post(f"/topics/{topic}", content=body.encode(), headers=REST_TYPE)
            want = 200 if key is not None else (400 if kinesis else 422)
            assert resp.status_code == want, (h.kind, h.text[:300], resp.status_code, resp.text[:300])
            base = {"request_id": str(i), "attempt": 1, "kind": h.kind, "topic": topic}
            events.append(orjson.dumps({**base, "event": "sent", "inds": [key if key is not None else -1]}))
            if key is None:
                events.append(orjson.dumps({**base, "event": "error", "status": want, "final": True, "error": "x"}))
                continue
            doc = resp.json()
            if kinesis:
                partition, offset = int(doc["SequenceNumber"][2:8]), int(doc["SequenceNumber"][8:])
            else:
                partition, offset = doc["offsets"][0]["partition"], doc["offsets"][0]["offset"]
            records_acked = [{"ind": key, "partition": partition, "offset": offset}]
            events.append(orjson.dumps({**base, "event": "acked", "status": 200, "records": records_acked}))
            accepted[h.kind].append(value)
    send_log.write_bytes(b"".join(e + b"\n" for e in events))
    return accepted


def _rows(lake: Lake, *parts: str) -> list[dict[str, Any]]:
    table = delta.read_table(lake, *parts)
    return [] if table is None else table.to_pylist()


def _canonical(raw: str) -> bytes:
    return orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)


def _run_pipeline(root: Path, records: list[Hostile]) -> None:
    log_url = f"file://{root / 'log'}"
    batch_url, stream_url = f"file://{root / 'batch-lake'}", f"file://{root / 'stream-lake'}"
    port = free_port()
    with (root / "api.log").open("wb") as api_log:
        api = subprocess.Popen(
            [sys.executable, "-m", "pinpipe", "api", "--port", str(port), "--log", log_url],
            stdout=api_log, stderr=subprocess.STDOUT, env=_env(), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, 60, api)
            accepted = _send(f"http://127.0.0.1:{port}", records, root / "send.jsonl")
        finally:
            api.terminate()
            code = api.wait(30)
    api_text = (root / "api.log").read_text()
    assert code == 0, api_text[-3000:]
    assert "Traceback" not in api_text and "Exception in ASGI" not in api_text, api_text[-3000:]

    for args in (
        ("sink", "--log", log_url, "--lake", batch_url, "--until-idle", "--flush-seconds", "0.3"),
        ("batch", "--lake", batch_url),
        ("stream", "--log", log_url, "--lake", stream_url, "--until-idle", "--max-wait-ms", "200"),
        ("accounting", "--lake", batch_url, "--log", log_url, "--send-log", str(root / "send.jsonl")),
        ("parity", "--lake", stream_url, "--lake", batch_url),
    ):
        done = _pinpipe(*args)
        assert done.returncode == 0, (args[0], done.stdout[-3000:], done.stderr[-3000:])
        if args[0] == "accounting":
            assert "accounting: balanced" in done.stdout, done.stdout[-3000:]

    expected = expected_output(accepted)
    lake = Lake(batch_url)
    for kind in KINDS:
        rows = sorted(_rows(lake, "silver", kind), key=lambda r: r["ind"])
        assert rows == expected.silver_table(kind).to_pylist(), kind
        quarantine = delta.read_table(lake, "quarantine", kind)
        got = Counter(
            (r["reason"], _canonical(r["raw"])) for r in ([] if quarantine is None else quarantine.to_pylist())
        )
        assert got == Counter(
            (q.reason, _canonical(orjson.dumps(q.record).decode())) for q in expected.quarantine[kind]
        )
        assert {reason_code(reason) for reason, _ in got} <= {"bad_timestamp", "bad_coordinates"}, kind
        assert len(rows) + sum(got.values()) <= len(accepted[kind]), kind


@settings(
    max_examples=1, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
)
@given(generated=st.lists(hostile_records(), min_size=GENERATED, max_size=GENERATED))
def test_hostile_records_never_halt_a_stage_and_end_in_silver_or_quarantine(generated: list[Hostile]) -> None:
    records = known_poison() + generated
    assert sum(1 for h in records if _expect(h)[1] is not None) > len(records) // 3  # most poison is accepted
    with tempfile.TemporaryDirectory(prefix="pinpipe-hostile-") as tmp:
        _run_pipeline(Path(tmp), records)


def test_poison_already_in_the_log_is_quarantined_and_the_good_records_reach_silver(tmp_path: Path) -> None:
    """Records an older API accepted (a 5,000-digit ``age``, a 5,000-digit key, ``1e999`` as a latitude string, a
    trailing comma) sit in the log beside good ones: sink, batch and stream exit 0, the poison is quarantined with
    its reason, the good records are in silver, and the two lakes agree."""
    from pinpipe.log.embedded import EmbeddedLog

    good_user = {"first_name": "Ada", "last_name": "L", "date_joined": "2020-08-28 03:52:47"}
    good_geo = {"timestamp": "2020-08-28 03:52:47", "longitude": 2.5}
    lines = {
        "user": [
            (1, orjson.dumps({"ind": 1, **good_user, "age": "9" * 5000})),
            (2, orjson.dumps({"ind": "9" * 5000, **good_user})),
            (3, orjson.dumps({"ind": 3, **good_user, "age": 36})),
            (4, orjson.dumps({"ind": 4, **good_user})[:-1] + b",}"),
        ],
        "geo": [
            (1, orjson.dumps({"ind": 1, **good_geo, "latitude": "1e999"})),
            (2, orjson.dumps({"ind": 2, **good_geo, "latitude": 1.5})),
        ],
    }
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic_name(DEFAULT_PREFIX, k) for k in KINDS], partitions=1)
    for kind, rows in lines.items():
        log.append(topic_name(DEFAULT_PREFIX, kind), [v for _, v in rows], [str(k).encode() for k, _ in rows])  # type: ignore[arg-type]
    log.close()
    log_url = f"file://{tmp_path / 'log'}"
    batch_url, stream_url = f"file://{tmp_path / 'batch-lake'}", f"file://{tmp_path / 'stream-lake'}"
    for args in (
        ("sink", "--log", log_url, "--lake", batch_url, "--until-idle", "--flush-seconds", "0.3"),
        ("batch", "--lake", batch_url, "--no-gold"),
        ("stream", "--log", log_url, "--lake", stream_url, "--until-idle", "--max-wait-ms", "200"),
        ("parity", "--lake", stream_url, "--lake", batch_url),
    ):
        done = _pinpipe(*args)
        assert done.returncode == 0, (args[0], done.stdout[-3000:], done.stderr[-3000:])
    for url in (batch_url, stream_url):
        lake = Lake(url)
        reasons = {kind: sorted(r["reason"] for r in _rows(lake, "quarantine", kind)) for kind in ("user", "geo")}
        assert reasons == {"user": ["bad_key:ind", "bad_type:age", "invalid_json"], "geo": ["bad_type:latitude"]}
        assert [(r["ind"], r["age"]) for r in _rows(lake, "silver", "user")] == [(3, 36)]
        assert [r["ind"] for r in _rows(lake, "silver", "geo")] == [2]
