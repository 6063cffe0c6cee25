"""Sink throughput over Kafka (a Tansu broker on loopback) with several partitions, against a plain consumer.

    .venv/bin/python bench/sink_kafka.py [--records N] [--topics 3] [--partitions 3] [--flush-records N] [--metrics]

Starts Tansu (memory storage) on a free loopback port, creates the topics and fills them through
:class:`~pinpipe.log.kafka.KafkaLog` (not timed). Then, in the same run:

1. the sink lands everything into a fresh ``file://`` lake (timed to its last commit, as ``bench/sink.py``; with
   ``--metrics`` it keeps the lag gauges as ``pinpipe sink --metrics-port`` does, one ``end_offset`` per partition
   per commit);
2. the baseline: one confluent-kafka consumer assigned every partition reads every record until each partition's
   EOF (no decoding, no writes) — the log's raw read speed, which a sink that reads partitions in turn should
   approach (a sink dominated by repositioning one consumer is many times slower).

Prints both rates and their ratio. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

from pinpipe.lake.sink import LakeSink
from pinpipe.lake.store import Lake
from pinpipe.log.kafka import KafkaLog
from pinpipe.telemetry.sink import SinkMetrics


def _fill(log: KafkaLog, topics: list[str], per_topic: int) -> None:
    for topic in topics:
        for first in range(0, per_topic, 5_000):
            values = [orjson.dumps({"ind": i, "topic": topic, "pad": "x" * 80}) for i in range(first, first + 5_000)]
            log.append(topic, values[: per_topic - first], [str(i).encode() for i in range(first, first + 5_000)])


def _plain_read(bootstrap: str, topics: list[str], partitions: int) -> tuple[int, float]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-plain",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    started = time.perf_counter()
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
    open_parts, count = len(topics) * partitions, 0
    while open_parts:
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            err = msg.error()
            if err is None:
                count += 1
            elif err.code() == KafkaError._PARTITION_EOF:
                open_parts -= 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return count, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--topics", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--flush-records", type=int, default=2_000)
    parser.add_argument("--metrics", action="store_true", help="keep sink metrics (lag needs end_offset)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.services import tansu_broker

    with tempfile.TemporaryDirectory(prefix="pinpipe-bench-sink-kafka-") as tmp, tansu_broker(Path(tmp)) as broker:
        bootstrap = f"127.0.0.1:{broker.port}"
        log = KafkaLog(bootstrap)
        topics = [f"bench{t}" for t in range(args.topics)]
        log.ensure_topics(topics, args.partitions)
        per_topic = args.records // args.topics
        started = time.perf_counter()
        _fill(log, topics, per_topic)
        total = per_topic * args.topics
        print(
            f"filled {args.topics} topics x {args.partitions} partitions: {total:,} records in "
            f"{time.perf_counter() - started:.1f} s (not timed below)"
        )

        lake = Lake(f"file://{Path(tmp) / 'lake'}")
        metrics = SinkMetrics() if args.metrics else None
        sink = LakeSink(
            log, lake, group="bench-sink", flush_records=args.flush_records, flush_seconds=1.0, metrics=metrics
        )
        stats = sink.run(until_idle=True)
        assert stats.records == total, stats
        plain_count, plain_s = _plain_read(bootstrap, topics, args.partitions)
        assert plain_count == total, plain_count
        log.close()
    sink_rate, plain_rate = total / stats.busy_s, total / plain_s
    print(f"sink over Kafka ({stats.objects} objects):  {stats.busy_s:7.2f} s  {sink_rate:10,.0f} records/s")
    print(f"one consumer reading every partition: {plain_s:7.2f} s  {plain_rate:10,.0f} records/s")
    print(f"ratio sink/plain read: {sink_rate / plain_rate:.2f}")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        json.dumps(
            {
                "bench": "sink_kafka",
                "records": total,
                "sink_records_per_s": round(sink_rate),
                "plain_read_records_per_s": round(plain_rate),
                "sink_to_plain": round(sink_rate / plain_rate, 3),
                "load_average": [round(x, 2) for x in load],
            }
        )
    )


if __name__ == "__main__":
    main()
