"""Kafka (Tansu) at 64 partitions: the sink lands every partition exactly once through ONE reader consumer, so
the broker clients and threads of a process do not grow with the partition count."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import orjson
import pytest

from pinpipe.lake.sink import LakeSink
from pinpipe.lake.store import Lake
from pinpipe.log.kafka import KafkaLog
from tests.fixtures.landed import assert_exactly_once
from tests.fixtures.services import Service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
PARTITIONS = 64


def test_the_sink_lands_64_partitions_through_one_consumer(kafka: Service, tmp_path: Path) -> None:
    log = KafkaLog(f"127.0.0.1:{kafka.port}", timeout_ms=5000)
    topic = f"{uuid.uuid4().hex[:8]}.pin"
    try:
        log.ensure_topics([topic], PARTITIONS)
        values = [orjson.dumps({"index": i, "title": f"post {i}"}) for i in range(PARTITIONS * 40)]
        log.append(topic, values, [str(i).encode() for i in range(len(values))])
        threads_before = threading.active_count()
        lake = Lake(f"file://{tmp_path / 'lake'}")
        (tmp_path / "lake").mkdir(exist_ok=True)
        stats = LakeSink(log, lake, group="g64", flush_records=500, flush_seconds=0.5, topics=[topic]).run(
            until_idle=True
        )
        assert stats.records == len(values)
        assert assert_exactly_once(lake, log, "g64", [topic]) == len(values)
        reader = log._reader
        assert reader is not None and reader.assigned == PARTITIONS  # one consumer holds every partition
        # librdkafka runs a few threads per client, in C (invisible to threading); Python threads stay flat
        assert threading.active_count() <= threads_before + 2
    finally:
        log.close()
