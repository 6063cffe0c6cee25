"""The embedded log's segments and retention: rolling, reading across segments, recovery of a multi-segment
partition, retention by age and size bounded by every consumer group's committed position, expired groups, the
retired manifest, crash safety of a deletion and the old single-file layout."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from pinpipe.log import segment
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.log.retention import RetentionPolicy, describe
from pinpipe.log.retired import RETIRED_FILE, Retired, read_retired, write_retired
from pinpipe.log.scan import repair, verify

SEG = 4096
HOUR_MS = 3600 * 1000


class Clock:
    """Milliseconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def _value(i: int) -> bytes:
    return b'{"ind":%d,"pad":"%s"}' % (i, b"x" * 40)


def _fill(log: EmbeddedLog, topic: str, start: int, count: int, per_append: int = 10) -> None:
    for i in range(start, start + count, per_append):
        n = min(per_append, start + count - i)
        log.append(topic, [_value(j) for j in range(i, i + n)], [str(j).encode() for j in range(i, i + n)])


def _open(root: Path, clock: Clock | None = None, **policy: object) -> EmbeddedLog:
    """The writer of topic ``t`` (created if missing), its background passes stopped: the test runs each pass.
    No group is required unless the test says so (``groups``)."""
    settings = {"segment_bytes": SEG, "retention_ms": -1, "retention_bytes": -1, "groups": (), **policy}
    log = EmbeddedLog(root / "log", RetentionPolicy(**settings), clock or Clock())  # type: ignore[arg-type]
    log.ensure_topics(["t"])
    log.run_retention()  # takes the writer lock: recovery and the pass at open
    assert log.retention is not None
    log.retention.stop()
    return log


def _all(log: EmbeddedLog, topic: str, offset: int = 0) -> list[int]:
    out: list[int] = []
    while records := log.read(topic, 0, offset, 1000):
        out += [r.offset for r in records]
        offset = records[-1].offset + 1
    return out


def test_rolling_makes_segments_and_readers_read_across_them(tmp_path: Path) -> None:
    log = _open(tmp_path)
    reader = EmbeddedLog(tmp_path / "log")  # opened before the rolls: it must see the new segments
    assert reader.read("t", 0, 0) == []
    _fill(log, "t", 0, 500)
    pdir = tmp_path / "log" / "t" / "0"
    bases = segment.list_segments(pdir)
    assert len(bases) >= 5 and bases[0] == 0
    assert all((pdir / f"{b:020d}.data").exists() and (pdir / f"{b:020d}.index").exists() for b in bases)
    for info in describe(pdir)[:-1]:  # a closed segment holds about segment_bytes, data and index together
        assert SEG <= info.bytes < SEG + 1024
    open_before = len(os.listdir("/proc/self/fd"))
    assert _all(reader, "t") == list(range(500))
    assert len(os.listdir("/proc/self/fd")) - open_before <= 2 * 4  # a few segments open, not all of them
    values: list[bytes] = []
    position = 0
    while (block := reader.read_values("t", 0, position, 10_000)).count:
        values += block.data.splitlines()
        position = block.end
    assert values == [_value(i) for i in range(500)]
    assert reader.end_offset("t", 0) == log.end_offset("t", 0) == 500
    assert [r.offset for r in reader.read("t", 0, bases[2], 3)] == [bases[2], bases[2] + 1, bases[2] + 2]
    log.close()
    reader.close()


def test_a_restart_recovers_a_multi_segment_partition_with_a_torn_active_tail(tmp_path: Path) -> None:
    log = _open(tmp_path)
    _fill(log, "t", 0, 300)
    log.close()
    pdir = tmp_path / "log" / "t" / "0"
    active = segment.list_segments(pdir)[-1]
    assert active > 0
    data, index = segment.segment_paths(pdir, active)
    with data.open("ab") as fh:  # half a record, as a crash mid-write leaves it
        fh.write(b"\x40\x00\x00\x00\x01\x02\x03")
    with index.open("r+b") as fh:  # and the active index lost its last entry (it is not fsynced)
        fh.truncate(index.stat().st_size - 8)
    reopened = _open(tmp_path)
    assert reopened.append("t", [_value(300)]) == [(0, 300)]
    assert reopened.recovery_report("t", 0).reindexed == 1
    assert reopened.recovery_report("t", 0).truncated_bytes == 7
    assert _all(reopened, "t") == list(range(301))
    reopened.close()
    assert [c.corrupt for c in verify(tmp_path / "log")] == [[]]


def test_retention_deletes_only_segments_below_every_groups_committed_position(tmp_path: Path) -> None:
    clock = Clock()
    log = _open(tmp_path, clock, retention_ms=HOUR_MS)
    _fill(log, "t", 0, 600)
    pdir = tmp_path / "log" / "t" / "0"
    segments = describe(pdir)
    log.commit("pinpipe-sink", "t", {0: 600})
    stream_at = segments[3].base + 5  # inside the fourth segment
    log.commit("pinpipe-stream", "t", {0: stream_at})
    clock.now += 2 * HOUR_MS  # every closed segment is past retention.ms
    result = log.run_retention()
    deleted = [d.segment.base for d in result.deleted]
    assert deleted == [s.base for s in segments[:3]]  # the stream has not committed the fourth
    assert [(d.segment.base, d.held_by) for d in result.held] == [(segments[3].base, ("pinpipe-stream", stream_at))]
    assert segment.list_segments(pdir)[0] == segments[3].base
    retired = read_retired(pdir)
    assert retired.log_start == log.log_start("t", 0) == segments[3].base
    assert retired.records == segments[3].base  # every offset below the log start is counted
    assert sum(s.keyed for s in retired.segments) == segments[3].base
    assert [r.offset for r in log.read("t", 0, 0, 2)] == [segments[3].base, segments[3].base + 1]
    assert log.read_values("t", 0, 0, 5).start == segments[3].base  # below the start: the feed starts there
    assert _all(log, "t") == list(range(segments[3].base, 600))
    log.commit("pinpipe-stream", "t", {0: 600})  # the stream catches up: the rest goes on the next pass
    again = log.run_retention()
    assert [d.segment.base for d in again.deleted] == [s.base for s in segments[3:-1]]
    assert segment.list_segments(pdir) == [segments[-1].base]  # the active segment is never deleted
    assert read_retired(pdir).records == segments[-1].base
    log.close()


def test_a_group_that_never_committed_a_partition_holds_it_and_an_expired_group_does_not(tmp_path: Path) -> None:
    clock = Clock()
    log = _open(tmp_path, clock, retention_ms=HOUR_MS, group_expiry_ms=24 * HOUR_MS)
    _fill(log, "t", 0, 300)
    log.commit("pinpipe-sink", "t", {0: 300})
    log.commit("abandoned", "t", {})  # committed the topic, never this partition: position 0
    clock.now += 2 * HOUR_MS
    assert log.run_retention().deleted == []
    commit_file = tmp_path / "log" / "commits" / "abandoned" / "t.json"
    old = time.time() - 2 * 24 * 3600
    os.utime(commit_file, (old, old))  # its last commit is two days old: expired
    closed = describe(tmp_path / "log" / "t" / "0")[:-1]
    assert [d.segment for d in log.run_retention().deleted] == closed
    log.close()


def test_a_required_group_holds_everything_before_its_first_commit_until_it_expires(tmp_path: Path) -> None:
    clock = Clock()
    log = _open(tmp_path, clock, retention_ms=HOUR_MS, group_expiry_ms=24 * HOUR_MS, groups=("pinpipe-sink",))
    _fill(log, "t", 0, 300)
    clock.now += 2 * HOUR_MS  # due by age, but the sink never committed (never started): nothing goes
    result = log.run_retention()
    assert result.deleted == [] and [d.held_by for d in result.held] == [("pinpipe-sink", 0)]
    clock.now += 24 * HOUR_MS  # the oldest record is now older than group_expiry_ms: the claim expired
    closed = describe(tmp_path / "log" / "t" / "0")[:-1]
    assert [d.segment for d in log.run_retention().deleted] == closed
    log.close()


def test_retention_bytes_bounds_a_partition_while_the_groups_keep_up(tmp_path: Path) -> None:
    bound = 4 * SEG
    log = _open(tmp_path, retention_bytes=bound)
    pdir = tmp_path / "log" / "t" / "0"
    largest = 0
    for start in range(0, 3000, 100):
        _fill(log, "t", start, 100)
        log.commit("pinpipe-sink", "t", {0: start + 100})
        log.run_retention()
        largest = max(largest, sum(s.bytes for s in describe(pdir)))
    assert largest <= bound + 1024  # at most one append batch over the bound
    assert read_retired(pdir).records + len(_all(log, "t")) == 3000
    log.close()


def test_a_lagging_group_holds_back_the_size_bound_and_is_named(tmp_path: Path) -> None:
    log = _open(tmp_path, retention_bytes=2 * SEG)
    _fill(log, "t", 0, 600)
    log.commit("pinpipe-sink", "t", {0: 0})
    result = log.run_retention()
    assert result.deleted == []
    assert [(d.reason, d.held_by) for d in result.held] == [("size", ("pinpipe-sink", 0))]
    assert result.bytes[("t", 0)] > 2 * SEG
    log.close()


def test_a_crash_between_the_manifest_and_the_unlink_is_finished_on_open(tmp_path: Path) -> None:
    log = _open(tmp_path)
    _fill(log, "t", 0, 300)
    log.close()
    pdir = tmp_path / "log" / "t" / "0"
    first, second = describe(pdir)[:2]
    # What a pass leaves when it dies after writing the manifest, before unlinking the segment:
    write_retired(pdir, Retired(second.base, ()))
    reader = EmbeddedLog(tmp_path / "log")
    assert reader.log_start("t", 0) == second.base  # readers ignore the retired segment
    assert _all(reader, "t") == list(range(second.base, 300))
    assert (pdir / f"{first.base:020d}.data").exists()
    writer = _open(tmp_path)
    assert writer.append("t", [_value(300)]) == [(0, 300)]
    assert writer.recovery_report("t", 0).finished_deletes == 1
    assert segment.list_segments(pdir)[0] == second.base
    writer.close()
    reader.close()


def test_verify_and_repair_work_across_segments(tmp_path: Path) -> None:
    log = _open(tmp_path)
    _fill(log, "t", 0, 300)
    log.close()
    pdir = tmp_path / "log" / "t" / "0"
    target = describe(pdir)[1].base + 3  # a record in a closed segment
    data, start, end = segment.record_span(pdir, target)
    raw = bytearray(data.read_bytes())
    raw[(start + end) // 2] ^= 0x55
    data.write_bytes(bytes(raw))
    checks = verify(tmp_path / "log")
    assert [(o, r) for c in checks for o, r in c.corrupt] == [(target, "checksum mismatch")]
    assert checks[0].records == 300
    assert repair(tmp_path / "log", "t", 0, target) == [target]
    reader = EmbeddedLog(tmp_path / "log")
    assert _all(reader, "t") == [o for o in range(300) if o != target]
    reader.close()


def _legacy_partition(pdir: Path, count: int) -> None:
    """A partition as the previous version wrote it: one ``data`` file and one ``index``."""
    pdir.mkdir(parents=True)
    data = bytearray()
    index = bytearray()
    for i in range(count):
        index += struct.pack("<Q", len(data))
        data += segment.encode(i, 1_700_000_000_000, str(i).encode(), _value(i))
    (pdir / "data").write_bytes(bytes(data))
    (pdir / "index").write_bytes(bytes(index))


def test_the_old_single_file_layout_opens_reads_rolls_and_retires(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _legacy_partition(root / "t" / "0", 200)
    (root / "topics.json").write_bytes(b'{"t": 1}')
    reader = EmbeddedLog(root)
    assert _all(reader, "t") == list(range(200))
    reader.close()
    clock = Clock()
    log = _open(tmp_path, clock, retention_ms=HOUR_MS)
    assert log.append("t", [_value(200)]) == [(0, 200)]  # the old file is too big: the writer rolled first
    pdir = root / "t" / "0"
    assert segment.list_segments(pdir) == [0, 200]
    assert (pdir / "data").exists() and not (pdir / f"{0:020d}.data").exists()
    _fill(log, "t", 201, 100)
    assert _all(log, "t") == list(range(301))
    log.commit("pinpipe-sink", "t", {0: 301})
    clock.now += 2 * HOUR_MS
    assert log.run_retention().deleted[0].segment.base == 0
    assert not (pdir / "data").exists() and not (pdir / "index").exists()
    assert read_retired(pdir).segments[0].records == 200
    log.close()


def test_a_manifest_that_is_not_one_is_an_error_naming_the_file(tmp_path: Path) -> None:
    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / RETIRED_FILE).write_bytes(b"[1, 2]")
    with pytest.raises(Exception, match="retired manifest"):
        read_retired(pdir)
