"""The sink's writer threads: while one partition's object is slow to become durable, other partitions' objects
are written, yet each partition's objects are written one after the other, in offset order, and everything
lands exactly once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import orjson

from pinpipe.lake.sink import LakeSink
from pinpipe.lake.store import Lake, parse_landed_key
from pinpipe.log.memory import MemoryLog
from tests.fixtures.landed import assert_exactly_once

GROUP = "sink-writers"


class GatedLake(Lake):
    """A file lake whose first object of topic ``slow`` is held until two objects of topic ``fast`` are durable,
    recording the order in which each partition's objects were written."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = threading.Event()
        self.gate_opened: bool | None = None
        self.lock = threading.Lock()
        self.writing: set[tuple[str, int]] = set()
        self.overlapping: list[str] = []
        self.order: dict[tuple[str, int], list[int]] = {}
        self.fast_done = 0

    def create(self, key: str, data: bytes) -> bool:
        parsed = parse_landed_key(key)
        assert parsed is not None
        topic, partition, start = parsed
        with self.lock:
            if (topic, partition) in self.writing:
                self.overlapping.append(key)
            self.writing.add((topic, partition))
            self.order.setdefault((topic, partition), []).append(start)
        try:
            if topic == "slow" and start == 0:
                self.gate_opened = self.gate.wait(20)  # a deadlock guard: the gate opens once "fast" is written
            written = super().create(key, data)
            if topic == "fast":
                with self.lock:
                    self.fast_done += 1
                    if self.fast_done == 2:
                        self.gate.set()
            return written
        finally:
            with self.lock:
                self.writing.discard((topic, partition))


def test_other_partitions_land_while_one_object_waits_and_each_partition_stays_in_order(tmp_path: Path) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    log.ensure_topics(["fast", "slow"], 1)
    for topic in ("fast", "slow"):
        log.append(topic, [orjson.dumps({"ind": i, "topic": topic}) for i in range(300)])
    lake = GatedLake(f"file://{tmp_path / 'lake'}")
    stats = LakeSink(log, lake, group=GROUP, flush_records=100, flush_seconds=0.1, writers=4).run(until_idle=True)
    assert lake.gate_opened is True  # "fast" was written while "slow"'s first object waited
    assert lake.overlapping == []  # never two objects of one partition at once
    assert lake.order == {("fast", 0): [0, 100, 200], ("slow", 0): [0, 100, 200]}
    assert stats.records == assert_exactly_once(lake, log, GROUP) == 600
    assert log.committed(GROUP, "slow") == {0: 300}
