"""The stream worker on the in-memory log and a file:// lake: oracle output, restart without loss or doubles,
a crash between quarantine and silver, commit conflicts retried, static partition split, stop and idle exit."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pinpipe.engine import DuckDBEngine
from pinpipe.errors import CommitConflictError, StoreUnavailableError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.feed import LogFeed
from pinpipe.log.memory import MemoryLog
from pinpipe.stream.worker import StreamOptions, StreamWorker
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import ExpectedOutput, expected_output
from pinpipe.tables import KINDS, RAW_TABLES, topic_name
from pinpipe.tables import stream_app_id as app_id

PREFIX = "t"


@pytest.fixture(scope="module")
def engine() -> Iterator[DuckDBEngine]:
    """One engine for the module (building the cleaning SQL takes a second or two; later batches milliseconds)."""
    e = DuckDBEngine()
    yield e
    e.close()


def _fill(log: MemoryLog, posts: int, seed: int, partitions: int = 2) -> ExpectedOutput:
    """Append a dirty send list (faults, re-sends, conflicts) keyed by ind; return the oracle's answer."""
    sent = send_list(posts, seed, resend_rate=0.1, conflict_rate=0.1, faults=0.08, iso_rate=0.2).by_kind()
    log.ensure_topics([topic_name(PREFIX, k) for k in KINDS], partitions)
    for kind, records in sent.items():
        key = RAW_TABLES[kind].key
        keys = [str(r.get(key)).encode() if isinstance(r, dict) else None for r in records]
        log.append(topic_name(PREFIX, kind), [orjson.dumps(r) for r in records], keys)
    return expected_output(sent)


def _worker(log: MemoryLog, lake: Lake, engine: DuckDBEngine, **kw: Any) -> StreamWorker:
    options = StreamOptions(prefix=PREFIX, max_batch=kw.pop("max_batch", 150), max_wait_ms=20, idle_stop_s=0.3)
    feed = LogFeed(log, PREFIX, "stream-test", **kw)
    return StreamWorker(feed, lake, engine, options)


def _assert_matches_oracle(lake: Lake, expected: ExpectedOutput) -> None:
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        assert silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
        quarantine = delta.read_table(lake, "quarantine", kind)
        got = sorted((r["reason"], r["raw"]) for r in (quarantine.to_pylist() if quarantine is not None else []))
        want = sorted((q.reason, orjson.dumps(q.record).decode()) for q in expected.quarantine[kind])
        assert got == want, kind


def _lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}")


def test_stream_output_equals_the_oracle(tmp_path: Path, engine: DuckDBEngine) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    expected = _fill(log, 400, seed=5)
    lake = _lake(tmp_path)
    worker = _worker(log, lake, engine)
    worker.run(threading.Event())
    _assert_matches_oracle(lake, expected)
    assert worker.batches >= 3
    for kind in KINDS:
        for p in range(2):
            end = log.end_offset(topic_name(PREFIX, kind), p)
            assert delta.txn_version(lake, kind, app_id(topic_name(PREFIX, kind), p)) == end
            assert log.committed("stream-test", topic_name(PREFIX, kind))[p] == end


def test_restart_after_a_crash_skips_what_silver_holds(tmp_path: Path, engine: DuckDBEngine) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    expected = _fill(log, 400, seed=6)
    lake = _lake(tmp_path)
    first = _worker(log, lake, engine, max_batch=100)
    for _ in range(4):
        first.step()
    first.drain()  # then "crash": no close, no log commit of the last batches
    read_first = sum(k.read for k in [first._totals])
    second = _worker(log, lake, engine)
    second.run(threading.Event())
    total = sum(log.end_offset(topic_name(PREFIX, k), p) for k in KINDS for p in range(2))
    assert read_first + second._totals.read == total  # nothing read twice, nothing skipped
    _assert_matches_oracle(lake, expected)


def test_crash_between_quarantine_and_silver_replays_cleanly(
    tmp_path: Path, engine: DuckDBEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    expected = _fill(log, 200, seed=7)
    lake = _lake(tmp_path)
    real_merge = delta.merge_silver

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("injected: the process dies before the silver commit")

    monkeypatch.setattr(delta, "merge_silver", crash)
    worker = _worker(log, lake, engine, max_batch=10_000)
    with pytest.raises(StoreUnavailableError):
        worker._retrying = lambda call: call()  # type: ignore[method-assign]
        worker.step()
        worker.drain()
    assert all(delta.read_table(lake, "silver", kind) is None for kind in KINDS)
    # the crash came after the quarantine commit: the replay below must not quarantine those records twice
    written = [kind for kind in KINDS if (delta.row_count(lake, "quarantine", kind) or 0) > 0]
    assert written, "no quarantine was written before the simulated crash"
    for kind in written:
        assert delta.row_count(lake, "quarantine", kind) == len(expected.quarantine[kind])
    monkeypatch.setattr(delta, "merge_silver", real_merge)
    _worker(log, lake, engine).run(threading.Event())
    _assert_matches_oracle(lake, expected)


def test_a_lost_commit_race_is_retried(tmp_path: Path, engine: DuckDBEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    expected = _fill(log, 100, seed=8)
    lake = _lake(tmp_path)
    real_merge = delta.merge_silver
    failures = {"left": 2}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise CommitConflictError("injected: another writer committed first")
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(delta, "merge_silver", flaky)
    worker = _worker(log, lake, engine, max_batch=10_000)
    worker._sleep = lambda s: None
    worker.run(threading.Event())
    assert worker.metrics.retries._value.get() == 2
    _assert_matches_oracle(lake, expected)


def test_static_split_gives_each_partition_to_exactly_one_worker() -> None:
    log = MemoryLog(uuid.uuid4().hex)
    log.ensure_topics([topic_name(PREFIX, k) for k in KINDS], 4)
    log.ensure_topics([f"streaming-{PREFIX}-pin", "other.topic"], 4)
    feeds = [LogFeed(log, PREFIX, "g", worker_index=i, workers=3) for i in range(3)]
    for feed in feeds:
        feed.open(lambda tps: {tp: 0 for tp in tps}, lambda tps: None)
    owned = [feed.owned() for feed in feeds]
    assert sum(len(o) for o in owned) == 16
    assert set().union(*owned) == {(t, p) for t in log.topics() if t != "other.topic" for p in range(4)}
    for o in owned:  # both topics of a kind and partition go to the same worker
        assert ((f"streaming-{PREFIX}-pin", 1) in o) == ((topic_name(PREFIX, "pin"), 1) in o)


def test_stop_finishes_the_batch_in_flight(tmp_path: Path, engine: DuckDBEngine) -> None:
    log = MemoryLog(uuid.uuid4().hex)
    _fill(log, 300, seed=9, partitions=1)
    lake = _lake(tmp_path)
    worker = _worker(log, lake, engine)
    worker.options = StreamOptions(prefix=PREFIX, max_batch=50, max_wait_ms=20)  # no idle exit
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 20
    while worker.batches < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    thread.join(20)
    assert not thread.is_alive()
    done = 0
    for kind in KINDS:
        topic = topic_name(PREFIX, kind)
        version = delta.txn_version(lake, kind, app_id(topic, 0)) or 0
        assert log.committed("stream-test", topic).get(0, 0) == version  # positions committed on the way out
        done += version
    assert 0 < done < sum(log.end_offset(topic_name(PREFIX, k), 0) for k in KINDS)
