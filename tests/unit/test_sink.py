"""The sink on the in-memory log: layout, batching, resume after a crash, idle exit, stop, faults."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from pinpipe.errors import CorruptStateError, StoreUnavailableError, UnknownTopicError
from pinpipe.lake.sink import LakeSink, encode_batch
from pinpipe.lake.store import Lake, landed_key
from pinpipe.log.base import EventLog, LogRecord
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.log.memory import MemoryLog
from pinpipe.telemetry.sink import SinkMetrics
from tests.fixtures.landed import assert_exactly_once, digests, landed_objects

GROUP = "sink-test"


def _log(topics: dict[str, int]) -> MemoryLog:
    log = MemoryLog(uuid.uuid4().hex)
    for topic, partitions in topics.items():
        log.ensure_topics([topic], partitions)
    return log


def _append(log: MemoryLog, topic: str, n: int, first: int = 0) -> list[bytes]:
    values = [orjson.dumps({"ind": i, "topic": topic}) for i in range(first, first + n)]
    log.append(topic, values)
    return values


def _sink(log: MemoryLog, lake: Lake, **kw: object) -> LakeSink:
    args: dict[str, object] = {"group": GROUP, "flush_records": 100, "flush_seconds": 0.1}
    args.update(kw)
    return LakeSink(log, lake, **args)  # type: ignore[arg-type]


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}")


def test_lands_every_topic_in_confluent_layout(lake: Lake) -> None:
    log = _log({"p.pin": 1, "p.geo": 1, "streaming-p-user": 2})
    sent = _append(log, "p.pin", 250)
    _append(log, "p.geo", 7)
    _append(log, "streaming-p-user", 31)
    stats = _sink(log, lake).run(until_idle=True)
    objects = landed_objects(lake)
    assert sorted(k for k in objects if "/p.pin/" in k) == [
        "topics/p.pin/partition=0/p.pin+0+0000000000.json",
        "topics/p.pin/partition=0/p.pin+0+0000000100.json",
        "topics/p.pin/partition=0/p.pin+0+0000000200.json",
    ]
    assert b"".join(objects[k] for k in sorted(objects) if "/p.pin/" in k) == b"".join(v + b"\n" for v in sent)
    assert stats.records == assert_exactly_once(lake, log, GROUP) == 288


def test_rerun_lands_only_new_records_and_never_touches_old_objects(lake: Lake) -> None:
    log = _log({"t": 1})
    _append(log, "t", 150)
    _sink(log, lake).run(until_idle=True)
    before = digests(landed_objects(lake))
    _append(log, "t", 30, first=150)
    stats = _sink(log, lake).run(until_idle=True)
    after = digests(landed_objects(lake))
    assert stats.records == 30
    assert {k: after[k] for k in before} == before
    assert sorted(set(after) - set(before)) == [landed_key("t", 0, 150)]
    assert_exactly_once(lake, log, GROUP)


def test_resume_after_crash_between_put_and_commit(lake: Lake) -> None:
    log = _log({"t": 1})
    values = _append(log, "t", 120)
    # A previous run landed offsets 0..36 as one object and died before committing.
    orphan = landed_key("t", 0, 0)
    assert lake.create(orphan, encode_batch(values[:37]))
    assert log.committed(GROUP, "t") == {}
    stats = _sink(log, lake, flush_records=50).run(until_idle=True)
    assert lake.get(orphan) == encode_batch(values[:37])
    assert sorted(landed_objects(lake)) == [landed_key("t", 0, s) for s in (0, 37, 87)]
    assert stats.records == 83
    assert_exactly_once(lake, log, GROUP)


def test_the_lake_not_a_committed_position_ahead_of_it_says_where_landing_resumes(lake: Lake) -> None:
    """A group that committed past what this lake holds (it landed into another lake, or this one was restored)
    does not make the sink skip records: the lake gets every record of the log."""
    log = _log({"t": 1})
    _append(log, "t", 40)
    log.commit(GROUP, "t", {0: 25})
    _sink(log, lake).run(until_idle=True)
    assert sorted(landed_objects(lake)) == [landed_key("t", 0, 0)]
    assert log.committed(GROUP, "t") == {0: 40}


def test_object_that_does_not_match_the_log_is_corrupt_state(lake: Lake) -> None:
    log = _log({"t": 1})
    _append(log, "t", 10)
    lake.create(landed_key("t", 0, 0), b'{"ind": "edited by hand"}\n')
    with pytest.raises(CorruptStateError, match="does not match the event log"):
        _sink(log, lake).run(until_idle=True)


def test_a_put_retried_after_a_hidden_success_finds_identical_bytes(tmp_path: Path) -> None:
    class FlakyLake(Lake):
        failures = 1

        def create(self, key: str, data: bytes) -> bool:
            written = super().create(key, data)
            if self.failures:
                self.failures -= 1
                raise StoreUnavailableError("timed out after the write")
            return written

    lake = FlakyLake(f"file://{tmp_path}")
    log = _log({"t": 1})
    _append(log, "t", 60)
    stats = _sink(log, lake).run(until_idle=True)
    assert (stats.rewrites, stats.objects) == (1, 1)
    assert_exactly_once(lake, log, GROUP)


def test_batches_by_time_and_stop_writes_what_it_holds(lake: Lake) -> None:
    log = _log({"t": 1})
    sink = _sink(log, lake, flush_records=1000, flush_seconds=0.2)
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, kwargs={"stop": stop})
    worker.start()
    try:
        _append(log, "t", 5)
        deadline = time.monotonic() + 5
        while not landed_objects(lake) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(landed_objects(lake)) == [landed_key("t", 0, 0)]  # partial batch flushed by time
        _append(log, "t", 3, first=5)
        time.sleep(0.06)  # read, but younger than flush_seconds
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()
    assert sorted(landed_objects(lake)) == [landed_key("t", 0, 0), landed_key("t", 0, 5)]
    assert_exactly_once(lake, log, GROUP)


def test_topics_created_while_running_are_landed(lake: Lake) -> None:
    log = _log({"early": 1})
    sink = _sink(log, lake, rescan_seconds=0.1)
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, kwargs={"stop": stop})
    worker.start()
    try:
        time.sleep(0.2)
        log.ensure_topics(["late"], 2)
        _append(log, "late", 10)
        deadline = time.monotonic() + 5
        while sum("/late/" in k for k in landed_objects(lake)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(5)
    assert assert_exactly_once(lake, log, GROUP) == 10


def test_buffered_bytes_are_bounded_across_partitions(lake: Lake) -> None:
    class SmallReads(MemoryLog):
        def read(
            self, topic: str, partition: int, offset: int, max_records: int = 1000, timeout_s: float = 0.0
        ) -> list[LogRecord]:
            return super().read(topic, partition, offset, min(max_records, 10), timeout_s)

    log = SmallReads(uuid.uuid4().hex)
    log.ensure_topics(["t"], 4)
    _append(log, "t", 400)  # ~24 bytes each, 100 per partition, read 10 at a time
    stats = _sink(log, lake, flush_records=1000, flush_seconds=5.0, max_buffered_bytes=3000).run(until_idle=True)
    sizes = sorted(len(data) for data in landed_objects(lake).values())
    assert stats.records == 400
    assert len(sizes) > 4 and sizes[-1] <= 3000  # cut early by the byte bound, not one object per partition
    assert_exactly_once(lake, log, GROUP)


def test_until_idle_returns_after_flush_seconds_without_records(lake: Lake) -> None:
    log = _log({"t": 2})
    started = time.monotonic()
    stats = _sink(log, lake, flush_seconds=0.3).run(until_idle=True)
    assert 0.3 <= time.monotonic() - started < 5.0
    assert stats.records == 0


def test_topic_filter_lands_only_those_and_rejects_unknown_ones(lake: Lake) -> None:
    log = _log({"a": 1, "b": 1})
    _append(log, "a", 3)
    _append(log, "b", 4)
    assert _sink(log, lake, topics=["b"]).run(until_idle=True).records == 4
    assert all("/b/" in key for key in landed_objects(lake))
    with pytest.raises(UnknownTopicError, match=r"no topic 'c'.*topics it holds: a, b"):
        _sink(log, lake, topics=["b", "c"]).run(until_idle=True)


def test_log_outage_is_retried(lake: Lake) -> None:
    log = _log({"t": 1})
    _append(log, "t", 20)
    sink = _sink(log, lake, flush_seconds=0.3)
    sink.discover()
    log.fail()
    threading.Timer(0.4, log.recover).start()
    stats = sink.run(until_idle=True)
    assert stats.records == 20
    assert_exactly_once(lake, log, GROUP)


def test_stale_temporary_files_are_removed(lake: Lake) -> None:
    log = _log({"t": 1})
    _append(log, "t", 3)
    stale = Path(lake.root) / "topics/t/partition=0/.t+0+0000000000.json.999.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    _sink(log, lake).run(until_idle=True)
    assert not stale.exists()
    assert_exactly_once(lake, log, GROUP)


def test_metrics_count_records_objects_and_lag(lake: Lake) -> None:
    log = _log({"t": 1})
    _append(log, "t", 250)
    metrics = SinkMetrics()
    _sink(log, lake, metrics=metrics).run(until_idle=True)
    assert metrics.registry.get_sample_value("pinpipe_sink_records_total", {"topic": "t", "partition": "0"}) == 250
    assert metrics.registry.get_sample_value("pinpipe_sink_objects_total", {"topic": "t", "partition": "0"}) == 3
    assert metrics.registry.get_sample_value("pinpipe_sink_lag_records", {"topic": "t", "partition": "0"}) == 0


@pytest.mark.parametrize("backend", ["memory", "embedded"])
def test_values_with_line_breaks_land_one_line_each(lake: Lake, tmp_path: Path, backend: str) -> None:
    log: EventLog = _log({"t": 1}) if backend == "memory" else EmbeddedLog(tmp_path / "log")
    log.ensure_topics(["t"])
    log.append("t", [b'{"a":1}', b'{\n  "b": 2\n}', b'{"c":3}'])
    log.append("t", [b'{"d":4}'])
    stats = _sink(log, lake, flush_records=3).run(until_idle=True)
    objects = landed_objects(lake)
    assert stats.records == 4
    assert objects == {
        landed_key("t", 0, 0): b'{"a":1}\n{"b":2}\n{"c":3}\n',
        landed_key("t", 0, 3): b'{"d":4}\n',
    }
    log.commit(GROUP, "t", {0: 0})  # as if it crashed before committing: the last object is rebuilt and compared
    assert _sink(log, lake).run(until_idle=True).records == 0
    assert log.committed(GROUP, "t") == {0: 4}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b'{"a":1}', b'{"b":2}'], b'{"a":1}\n{"b":2}\n'),
        ([b'{\n  "a": "x"\n}', b"{}"], b'{"a":"x"}\n{}\n'),
        ([b"not\r\njson"], b"not json\n"),
        ([], b""),
    ],
)
def test_encode_batch_keeps_one_record_per_line(values: list[bytes], expected: bytes) -> None:
    assert encode_batch(values) == expected
