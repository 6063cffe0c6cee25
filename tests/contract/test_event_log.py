"""The EventLog contract, run against every backend: memory, embedded (file://), Kafka (Tansu) and Kinesis (moto).

Each test gets a :class:`Backend` handle: ``open()`` returns a (new) client on the same storage, so resuming
after a restart can be tested, and ``outage()`` makes the backend unavailable for the duration of a block.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.errors import CorruptStateError, LogUnavailableError, UnknownTopicError
from pinpipe.log import EventLog, open_log
from tests.contract.log_backends import Backend, make_backend

BACKENDS = [
    "memory",
    "embedded",
    pytest.param("kafka", marks=pytest.mark.integration),
    pytest.param("kinesis", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with make_backend(request.param, request, tmp_path) as handle:
        yield handle


SEGMENT_DATA = f"{0:020d}.data"
SEGMENT_INDEX = f"{0:020d}.index"
"""The first segment of a partition (base offset 0)."""


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_append_and_read_in_order(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic], partitions=1)
    assert log.topics()[topic] == 1
    first = log.append(topic, [b'{"n":0}', b'{"n":1}'])
    second = log.append(topic, [b'{"n":2}'])
    assert first == [(0, 0), (0, 1)]
    assert second == [(0, 2)]
    records = log.read(topic, 0, 0, timeout_s=5)
    assert [r.value for r in records] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert [r.offset for r in records] == [0, 1, 2]
    assert all(r.topic == topic and r.partition == 0 for r in records)
    assert [r.value for r in log.read(topic, 0, 1, max_records=1, timeout_s=5)] == [b'{"n":1}']
    assert log.end_offset(topic, 0) == 3
    assert log.read(topic, 0, 3, timeout_s=0) == []


def test_keyed_records_keep_their_partition(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic], partitions=3)
    keys = [str(i % 7).encode() for i in range(42)]
    placed = log.append(topic, [f'{{"i":{i}}}'.encode() for i in range(42)], keys)
    by_key: dict[bytes, set[int]] = {}
    for key, (p, _) in zip(keys, placed, strict=True):
        by_key.setdefault(key, set()).add(p)
    assert all(len(ps) == 1 for ps in by_key.values())
    for p in range(3):  # offsets are dense per partition, in append order
        offsets = [o for (q, o) in placed if q == p]
        assert offsets == list(range(len(offsets)))
        got = _read_all(log, topic, p, len(offsets))
        assert [r.offset for r in got] == offsets
        assert all(r.key is not None and r.key in by_key and p in by_key[r.key] for r in got)


def _read_all(log: EventLog, topic: str, partition: int, n: int) -> list:  # type: ignore[type-arg]
    out: list = []  # type: ignore[type-arg]
    while len(out) < n:
        batch = log.read(topic, partition, len(out), timeout_s=5)
        assert batch, f"only {len(out)} of {n} records came back"
        out.extend(batch)
    return out


def test_commit_and_resume(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic])
    log.append(topic, [b"{}"] * 5)
    assert log.committed("g1", topic) == {}
    log.commit("g1", topic, {0: 3})
    log.close()
    again = backend.open()
    assert again.committed("g1", topic) == {0: 3}
    assert again.committed("g2", topic) == {}
    assert [r.offset for r in again.read(topic, 0, 3, timeout_s=5)] == [3, 4]
    again.commit("g1", topic, {0: 5})
    assert again.committed("g1", topic) == {0: 5}


def test_unknown_topic(backend: Backend) -> None:
    log = backend.open()
    with pytest.raises(UnknownTopicError):
        log.append(f"missing-{uuid.uuid4().hex[:6]}", [b"{}"])


def test_unavailable_backend(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic])
    log.append(topic, [b"{}"])
    with backend.outage(log), pytest.raises(LogUnavailableError):
        log.append(topic, [b'{"lost":true}'])
    if backend.recovers:  # the failed append left nothing behind
        assert log.append(topic, [b'{"after":true}']) == [(0, 1)]
        assert [r.value for r in log.read(topic, 0, 0, timeout_s=5)] == [b"{}", b'{"after":true}']


def test_read_waits_for_records(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic])
    assert log.read(topic, 0, 0, timeout_s=0.2) == []
    log.append(topic, [b"{}"])
    assert len(log.read(topic, 0, 0, timeout_s=5)) == 1


def test_read_values_is_read_joined(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic])
    values = [f'{{"i":{i},"pad":"{"x" * (i % 13)}"}}'.encode() for i in range(25)]
    log.append(topic, values[:10], [str(i).encode() for i in range(10)])  # keyed and unkeyed records
    log.append(topic, values[10:])
    got: list[bytes] = []
    position = 0
    while len(got) < 25:
        block = log.read_values(topic, 0, position, max_records=7, timeout_s=5)
        assert block.count and block.start == position and block.one_line_each
        assert block.data.endswith(b"\n") and block.count <= 7
        got.extend(block.data.splitlines())
        position = block.end
    assert got == values
    assert position == 25
    empty = log.read_values(topic, 0, 25, timeout_s=0.2)
    assert (empty.start, empty.end, empty.count, empty.data) == (25, 25, 0, b"")
    middle = log.read_values(topic, 0, 12, max_records=3, timeout_s=5)
    assert (middle.start, middle.end, middle.data) == (12, 15, b"".join(v + b"\n" for v in values[12:15]))


def test_read_values_flags_values_with_line_breaks(backend: Backend) -> None:
    log = backend.open()
    topic = _topic()
    log.ensure_topics([topic])
    log.append(topic, [b'{"a":\n1}', b'{"b":2}'])
    block = log.read_values(topic, 0, 0, timeout_s=5)
    assert block.count == 2 and not block.one_line_each
    assert block.data == b'{"a":\n1}\n{"b":2}\n'


# ---------------------------------------------------------------------------------------------- embedded only


def _reader_process(url: str, topic: str, n: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    log = open_log(url)
    got: list[bytes] = []
    while len(got) < n:
        batch = log.read(topic, 0, len(got), timeout_s=10)
        if not batch:
            break
        got.extend(r.value for r in batch)
    queue.put(got)


def test_embedded_readers_in_other_processes(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    topic = "shared"
    log.ensure_topics([topic])
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    readers = [ctx.Process(target=_reader_process, args=(url, topic, 300, queue)) for _ in range(2)]
    for proc in readers:
        proc.start()
    for i in range(30):
        log.append(topic, [f'{{"i":{i * 10 + j}}}'.encode() for j in range(10)])
    results = [queue.get(timeout=30) for _ in readers]
    for proc in readers:
        proc.join(10)
    expected = [f'{{"i":{i}}}'.encode() for i in range(300)]
    assert results == [expected, expected]


def _try_write(url: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from pinpipe.errors import ConfigError

    try:
        open_log(url).append("shared", [b"{}"])
        queue.put("wrote")
    except ConfigError as exc:
        queue.put(str(exc))


def test_embedded_refuses_a_second_writer(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["shared"])
    log.append("shared", [b"{}"])
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_try_write, args=(url, queue))
    proc.start()
    answer = queue.get(timeout=30)
    proc.join(10)
    assert "already writing" in answer
    log.close()


def test_embedded_truncates_a_torn_tail(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    log.append("t", [b'{"a":1}', b'{"a":2}'])
    log.close()
    data = tmp_path / "log" / "t" / "0" / SEGMENT_DATA
    index = tmp_path / "log" / "t" / "0" / SEGMENT_INDEX
    with data.open("ab") as fh:  # half a record, as a crash mid-write leaves it
        fh.write(b"\x40\x00\x00\x00\x01\x02\x03")
    with index.open("r+b") as fh:  # and the index lost its last entry
        fh.truncate(8)
    reader = open_log(url)
    assert [r.value for r in reader.read("t", 0, 0)] == [b'{"a":1}']  # a reader trusts the index only
    reopened = open_log(url)
    assert reopened.append("t", [b'{"a":3}']) == [(0, 2)]  # the writer re-indexed and truncated
    assert [r.value for r in reopened.read("t", 0, 0)] == [b'{"a":1}', b'{"a":2}', b'{"a":3}']
    assert data.stat().st_size == sum(8 + 20 + len(v) for v in (b'{"a":1}', b'{"a":2}', b'{"a":3}'))


def test_embedded_group_commit_shares_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import threading

    from pinpipe.log import embedded

    log = embedded.EmbeddedLog(tmp_path / "log")
    log.ensure_topics(["t"])
    calls = 0
    real = os.fdatasync

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    threads = [threading.Thread(target=lambda: [log.append("t", [b"{}"]) for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.end_offset("t", 0) == 400
    assert calls < 400
    with contextlib.suppress(Exception):
        log.close()


def test_embedded_read_values_stops_where_read_stops(tmp_path: Path) -> None:
    from pinpipe.log import segment

    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    big = b'{"big":"' + b"y" * (segment.VALUES_CHUNK // 3) + b'"}'
    log.append("t", [b'{"a":1}', big, big, big, big, b'{"a":2}', b'{"a":3}'])
    got: list[bytes] = []
    position = 0
    while (block := log.read_values("t", 0, position, max_records=100)).count:
        assert block.data.count(b"\n") == block.count
        got.extend(block.data.splitlines())
        position = block.end
    assert got == [b'{"a":1}', big, big, big, big, b'{"a":2}', b'{"a":3}']  # in chunks, none lost
    log.close()
    data = tmp_path / "log" / "t" / "0" / SEGMENT_DATA
    raw = bytearray(data.read_bytes())
    raw[-3] ^= 0xFF  # corrupt the last record's value: its CRC no longer matches
    data.write_bytes(bytes(raw))
    reader = open_log(url)
    assert [r.offset for r in reader.read("t", 0, 5, max_records=1)] == [5]
    block = reader.read_values("t", 0, 5, max_records=1)
    assert (block.count, block.end, block.data) == (1, 6, b'{"a":2}\n')
    with pytest.raises(CorruptStateError) as values_error:  # an indexed record that fails its CRC is corrupt
        reader.read_values("t", 0, 5)
    with pytest.raises(CorruptStateError) as read_error:
        reader.read("t", 0, 6)
    for exc in (values_error.value, read_error.value):
        assert (exc.facts["topic"], exc.facts["partition"], exc.facts["offset"]) == ("t", 0, 6)
        assert "checksum" in exc.message


def _flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x55
    path.write_bytes(bytes(raw))


def _record_start(partition_dir: Path, offset: int) -> int:
    import struct

    return int(struct.unpack_from("<Q", (partition_dir / SEGMENT_INDEX).read_bytes(), 8 * offset)[0])


def test_embedded_corrupt_record_mid_partition_is_named_then_skipped(tmp_path: Path) -> None:
    from pinpipe.log import integrity, scan

    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    log.append("t", [b'{"n":%d}' % i for i in range(20)])
    log.close()
    pdir = tmp_path / "log" / "t" / "0"
    _flip(pdir / SEGMENT_DATA, _record_start(pdir, 7) + 30)  # a byte inside record 7's value
    reader = open_log(url)
    with pytest.raises(CorruptStateError) as info:
        reader.read("t", 0, 0)  # never "not yet visible": the records after it exist
    assert (info.value.facts["offset"], info.value.facts["reason"]) == (7, "checksum mismatch")
    with pytest.raises(CorruptStateError):
        reader.read_values("t", 0, 0)
    assert [p["offset"] for p in reader.integrity_problems()] == [7]
    writer = open_log(url)  # recovery checks every indexed record, keeps their offsets and appends after them
    assert writer.append("t", [b'{"n":20}']) == [(0, 20)]
    with pytest.raises(Exception, match="not corrupt"):
        scan.repair(tmp_path / "log", "t", 0, 6)
    assert scan.repair(tmp_path / "log", "t", 0, 7) == [7]
    assert writer.integrity_problems() == []
    assert [r.offset for r in reader.read("t", 0, 0)] == [o for o in range(21) if o != 7]
    blocks = []
    position = 0
    while (block := reader.read_values("t", 0, position)).count:
        blocks.append((block.start, block.end, block.count))
        position = block.end
    assert blocks == [(0, 7, 7), (8, 21, 13)]  # a block never spans the skipped record
    writer.close()
    reopened = open_log(url)
    assert reopened.append("t", [b'{"n":21}']) == [(0, 21)]
    assert integrity.skipped_offsets(tmp_path / "log") == {("t", 0): frozenset({7})}


def test_embedded_offsets_never_go_back_after_tail_truncation(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    log.append("t", [b'{"n":%d}' % i for i in range(10)])
    log.commit("sink", "t", {0: 10})
    log.close()
    data = tmp_path / "log" / "t" / "0" / SEGMENT_DATA
    with data.open("r+b") as fh:
        fh.truncate(data.stat().st_size - 5)  # record 9 lost its last bytes
    writer = open_log(url)
    assert writer.append("t", [b'{"n":10}']) == [(0, 10)]  # not 9: a reader committed 10 already
    with pytest.raises(CorruptStateError) as info:
        writer.read("t", 0, 9)
    assert info.value.facts["offset"] == 9
    writer.close()


def test_embedded_refuses_to_reuse_offsets_a_group_committed(tmp_path: Path) -> None:
    from pinpipe.log import scan

    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    log.append("t", [b'{"n":%d}' % i for i in range(10)])
    log.commit("sink", "t", {0: 10})
    log.close()
    pdir = tmp_path / "log" / "t" / "0"
    cut = _record_start(pdir, 8)
    with (pdir / SEGMENT_DATA).open("r+b") as fh:  # data and index both lost records 8 and 9
        fh.truncate(cut)
    with (pdir / SEGMENT_INDEX).open("r+b") as fh:
        fh.truncate(8 * 8)
    with pytest.raises(CorruptStateError, match="reuse") as info:
        open_log(url).append("t", [b"{}"])
    assert info.value.facts["offset"] == 8
    assert scan.repair(tmp_path / "log", "t", 0, 8, count=2) == [8, 9]
    writer = open_log(url)
    assert writer.append("t", [b'{"n":10}']) == [(0, 10)]
    assert [r.offset for r in writer.read("t", 0, 0)] == [*range(8), 10]
    writer.close()


def test_embedded_rolls_back_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    log.append("t", [b'{"n":0}'])
    real = os.pwrite

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        if len(data) > 200:  # the big append: half of it lands, then the disk is full
            real(fd, data[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(LogUnavailableError):
        log.append("t", [b'{"n":%d}' % i for i in range(1, 40)])
    monkeypatch.undo()
    log.close()
    reopened = open_log(url)
    assert [r.value for r in reopened.read("t", 0, 0)] == [b'{"n":0}']  # the failed records never reappear
    assert reopened.append("t", [b'{"n":1}']) == [(0, 1)]
    reopened.close()


def test_embedded_fsyncs_new_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    log = open_log(f"file://{tmp_path / 'log'}")
    log.ensure_topics(["t"])
    log.append("t", [b"{}"])
    log.commit("g", "t", {0: 1})
    log.close()
    root = tmp_path / "log"
    for folder in (tmp_path, root, root / "t", root / "t" / "0", root / "commits", root / "commits" / "g"):
        assert str(folder) in synced, f"{folder} was not fsynced after an entry was created in it"


def test_embedded_rebuilds_a_zeroed_index_tail_without_calling_it_corruption(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"])
    log.append("t", [b'{"n":%d}' % i for i in range(4)])
    log.close()
    index = tmp_path / "log" / "t" / "0" / SEGMENT_INDEX
    raw = bytearray(index.read_bytes())
    raw[16:] = bytes(len(raw) - 16)  # after a power loss the index's last entries read as zeros
    index.write_bytes(bytes(raw))
    writer = open_log(url)
    assert writer.append("t", [b'{"n":4}']) == [(0, 4)]
    assert [r.value for r in writer.read("t", 0, 0)] == [b'{"n":%d}' % i for i in range(5)]
    assert writer.integrity_problems() == []
    writer.close()


def test_embedded_rolls_back_every_partition_of_a_failed_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    url = f"file://{tmp_path / 'log'}"
    log = open_log(url)
    log.ensure_topics(["t"], partitions=2)
    keys = [str(i).encode() for i in range(40)]
    log.append("t", [b'{"n":%d}' % i for i in range(40)], keys)
    real = os.pwrite
    data_writes = 0

    def fail_second_partition(fd: int, data: bytes, offset: int) -> int:
        nonlocal data_writes
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".data"):
            data_writes += 1
            if data_writes == 2:  # the request's records for the first partition are written; the second fails
                raise OSError(errno.EIO, "Input/output error")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", fail_second_partition)
    with pytest.raises(LogUnavailableError):
        log.append("t", [b'{"late":%d}' % i for i in range(40)], keys)
    monkeypatch.undo()
    ends = [log.end_offset("t", p) for p in (0, 1)]
    log.close()
    reopened = open_log(url)
    values = [r.value for p in (0, 1) for r in reopened.read("t", p, 0)]
    assert not [v for v in values if b"late" in v], "records of a failed request came back after a restart"
    assert [reopened.end_offset("t", p) for p in (0, 1)] == ends
    reopened.close()
