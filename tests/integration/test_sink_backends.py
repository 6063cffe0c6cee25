"""The sink on the real event-log backends: Kafka (Tansu) and Kinesis (moto), landing into a file:// lake."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pinpipe.lake.sink import LakeSink, encode_batch
from pinpipe.lake.store import Lake, landed_key
from pinpipe.log import EventLog, open_log
from tests.fixtures.landed import assert_exactly_once, digests, landed_objects

pytestmark = pytest.mark.integration
GROUP = "sink-backends"


@pytest.fixture(params=["kafka", "kinesis"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "kafka":
        url = f"kafka://127.0.0.1:{request.getfixturevalue('kafka').port}?timeout_ms=5000"
    else:
        url = f"kinesis://us-east-1?endpoint={request.getfixturevalue('moto').url}&commits={tmp_path / 'commits'}"
    log = open_log(url)
    try:
        yield log
    finally:
        log.close()


def test_lands_resumes_and_adds_only_new_records(log: EventLog, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = [f"{tag}.pin", f"streaming-{tag}-geo"]
    log.ensure_topics(topics, 1)  # Kafka: each partition switch repositions the one reader (slow on Tansu)
    for topic in topics:
        log.append(topic, [orjson.dumps({"ind": i, "t": topic}) for i in range(120)])
    lake = Lake(f"file://{tmp_path / 'lake'}")
    # A crashed run landed the first 9 records of one partition and never committed them.
    head = log.read(topics[0], 0, 0, 9, timeout_s=5)
    assert len(head) == 9
    assert lake.create(landed_key(topics[0], 0, head[0].offset), encode_batch([r.value for r in head]))

    def sink() -> LakeSink:
        return LakeSink(log, lake, group=GROUP, flush_records=500, flush_seconds=1.0, topics=topics)

    assert sink().run(until_idle=True).records == 240 - 9
    before = digests(landed_objects(lake))
    log.append(topics[1], [orjson.dumps({"ind": i}) for i in range(120, 130)])
    assert sink().run(until_idle=True).records == 10
    after = digests(landed_objects(lake))
    assert {k: after[k] for k in before} == before
    assert assert_exactly_once(lake, log, GROUP, topics) == 250
