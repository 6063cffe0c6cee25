"""Segment summaries of the embedded log and the size rule in the roll: a pass retires from the summaries counted
after each segment closed; a summary missing (a crash between the roll and the count), torn, edited, stale or
orphaned is recounted or removed, and the retired counts stay exact; and while the retention thread is held, as a
slow pass would hold it, appends cannot take a partition past ``retention_bytes``."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import orjson

from pinpipe.log import segment
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.log.retention import RetentionPolicy, describe
from pinpipe.log.retired import read_retired
from pinpipe.log.scan import repair
from pinpipe.log.segment_summary import read_summary, scan, write_summary

SEG = 4096
TOPIC = "t"


class Clock:
    """Milliseconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def _key(i: int) -> bytes | None:
    """Offset ``i``'s key: none (every 7th), not a usable ``ind`` (the next one), else its number."""
    return None if i % 7 == 0 else b"x%d" % i if i % 7 == 1 else str(i).encode()


def _value(i: int) -> bytes:
    return b'{"ind":%d,"pad":"%s"}' % (i, b"x" * 40)


def _fill(log: EmbeddedLog, start: int, count: int, per_append: int = 10) -> None:
    for i in range(start, start + count, per_append):
        n = min(per_append, start + count - i)
        log.append(TOPIC, [_value(j) for j in range(i, i + n)], [_key(j) for j in range(i, i + n)])


def _expected(base: int, end: int, gone: frozenset[int] = frozenset()) -> tuple[int, int, int]:
    """(records, keyed, unkeyed) of offsets ``[base, end)`` as appended, without ``gone``."""
    kept = [i for i in range(base, end) if i not in gone]
    keyed = sum(1 for i in kept if i % 7 > 1)
    return len(kept), keyed, len(kept) - keyed


def _open(root: Path, clock: Clock | None = None, **policy: object) -> EmbeddedLog:
    """The writer of topic ``t``, its retention thread stopped (the test runs passes and summaries itself)."""
    settings = {"segment_bytes": SEG, "retention_ms": -1, "retention_bytes": -1, "groups": (), **policy}
    log = EmbeddedLog(root / "log", RetentionPolicy(**settings), clock or Clock())  # type: ignore[arg-type]
    log.ensure_topics([TOPIC])
    log.run_retention()
    assert log.retention is not None
    log.retention.stop()
    return log


def _sidecars(pdir: Path) -> list[int]:
    return sorted(int(p.name[:20]) for p in pdir.glob("*.summary"))


def _flip_a_byte(pdir: Path, offset: int) -> None:
    data, start, end = segment.record_span(pdir, offset)
    raw = bytearray(data.read_bytes())
    raw[(start + end) // 2] ^= 0x55
    data.write_bytes(bytes(raw))


def _assert_exact(pdir: Path, gone: frozenset[int] = frozenset()) -> None:
    """Every retired segment's counts are those of what was appended at its offsets."""
    retired = read_retired(pdir)
    assert retired.segments and retired.log_start == retired.segments[-1].end
    for s in retired.segments:
        assert (s.records, s.keyed, s.unkeyed) == _expected(s.base, s.end, gone), s
        assert s.bytes > 0 and s.first_ts_ms > 0


def test_a_pass_retires_from_the_summaries_counted_after_the_roll(tmp_path: Path) -> None:
    log = _open(tmp_path, retention_bytes=4 * SEG)
    _fill(log, 0, 600)
    pdir = tmp_path / "log" / TOPIC / "0"
    closed = describe(pdir)[:-1]
    assert log.retention is not None
    assert log.retention.summarise() == len(closed)  # each closed segment read once
    assert _sidecars(pdir) == [s.base for s in closed]
    assert log.retention.summarise() == 0  # and never again
    first = read_summary(pdir, closed[0].base)
    assert first is not None and (first.records, first.keyed, first.unkeyed) == _expected(first.base, first.end)
    # A byte flipped after the count: the pass does not read the segment again, so it does not see it.
    _flip_a_byte(pdir, closed[0].base + 3)
    result = log.run_retention()
    assert [d.segment.base for d in result.deleted] == [s.base for s in closed[: len(result.deleted)]]
    assert len(result.deleted) >= 3 and result.read == 0
    _assert_exact(pdir)
    assert all(s.unreadable == 0 for s in read_retired(pdir).segments)
    assert _sidecars(pdir) == [s.base for s in closed[len(result.deleted) :]]  # a deleted segment's went with it
    log.close()


def test_a_crash_between_a_roll_and_its_summary_loses_no_count(tmp_path: Path) -> None:
    log = _open(tmp_path, retention_bytes=4 * SEG)
    _fill(log, 0, 600)  # rolls, and nothing summarised them: the thread is stopped, as if the process died
    log.close()
    pdir = tmp_path / "log" / TOPIC / "0"
    assert _sidecars(pdir) == []
    reopened = _open(tmp_path, retention_bytes=4 * SEG)  # its pass at open reads what it deletes
    _assert_exact(pdir)
    assert reopened.retention is not None
    assert reopened.retention.read_by_passes == len(read_retired(pdir).segments) >= 3
    left = describe(pdir)[:-1]
    reopened.retention.summarise()  # the thread began this when it started; whatever is left is read now
    assert reopened.retention.summarised == len(left)
    assert _sidecars(pdir) == [s.base for s in left]
    reopened.close()


def test_a_torn_edited_or_stale_summary_is_counted_again(tmp_path: Path) -> None:
    log = _open(tmp_path)
    _fill(log, 0, 600)
    pdir = tmp_path / "log" / TOPIC / "0"
    assert log.retention is not None
    log.retention.summarise()
    closed = describe(pdir)[:-1]
    torn, edited, moved, stale = (segment.summary_path(pdir, s.base) for s in closed[:4])
    torn.write_bytes(torn.read_bytes()[:40])
    doc = orjson.loads(edited.read_bytes())
    edited.write_bytes(orjson.dumps({**doc, "records": doc["records"] + 1}))  # its checksum no longer matches
    moved.write_bytes(stale.read_bytes())  # another segment's
    summary = read_summary(pdir, closed[3].base)
    assert summary is not None
    write_summary(pdir, replace(summary, bytes=summary.bytes - 8, records=summary.records - 1))  # an older count
    assert [read_summary(pdir, s.base) for s in closed[:3]] == [None, None, None]
    fresh = EmbeddedLog(tmp_path / "log", log.policy)  # a new writer process: it checks every sidecar once
    log.close()
    fresh.run_retention()
    assert fresh.retention is not None
    fresh.retention.stop()
    fresh.retention.summarise()  # what its thread did not reach before it stopped
    assert fresh.retention.summarised == 4
    for s in closed:
        found = read_summary(pdir, s.base)
        assert found is not None and (found.records, found.keyed, found.unkeyed) == _expected(s.base, s.end)
    # The same checks hold when a pass meets a bad sidecar first (before the thread came to it).
    segment.summary_path(pdir, closed[0].base).write_bytes(b"{not json")
    fresh.policy = fresh.retention.policy = replace(fresh.policy, retention_bytes=4 * SEG)
    assert fresh.run_retention().deleted
    _assert_exact(pdir)
    fresh.close()


def test_a_record_skipped_after_its_segment_was_counted_is_counted_once(tmp_path: Path) -> None:
    log = _open(tmp_path)
    _fill(log, 0, 600)
    log.close()
    pdir = tmp_path / "log" / TOPIC / "0"
    closed = describe(pdir)[:-1]
    broken_before = closed[0].base + 2  # corrupt when the segment is counted, skipped later
    _flip_a_byte(pdir, broken_before)
    writer = _open(tmp_path)
    assert writer.retention is not None
    writer.retention.summarise()
    counted = read_summary(pdir, closed[0].base)
    assert counted is not None and counted.unreadable == (broken_before,)
    assert counted.records == _expected(counted.base, counted.end)[0] - 1
    broken_after = closed[1].base + 5  # readable when counted, corrupt and skipped later
    _flip_a_byte(pdir, broken_after)
    writer.close()
    assert repair(tmp_path / "log", TOPIC, 0, broken_before) == [broken_before]
    assert repair(tmp_path / "log", TOPIC, 0, broken_after) == [broken_after]
    writer = _open(tmp_path, retention_bytes=4 * SEG)
    gone = frozenset({broken_before, broken_after})
    _assert_exact(pdir, gone)
    entries = {s.base: s for s in read_retired(pdir).segments}
    for base in (closed[0].base, closed[1].base):
        assert (entries[base].skipped, entries[base].unreadable) == (1, 0)
    writer.close()


def test_orphaned_summaries_and_torn_temporary_files_are_removed(tmp_path: Path) -> None:
    log = _open(tmp_path, retention_bytes=4 * SEG)
    _fill(log, 0, 600)
    pdir = tmp_path / "log" / TOPIC / "0"
    assert log.retention is not None
    log.retention.summarise()
    retired_base = describe(pdir)[0].base
    log.run_retention()
    start = read_retired(pdir).log_start
    orphan = scan(pdir, TOPIC, 0, start, describe(pdir)[1].base, frozenset())
    write_summary(pdir, replace(orphan, base=retired_base))  # a summary written as its segment was deleted
    torn = pdir / f"{start:020d}.summary.123.456.tmp"
    torn.write_bytes(b'{"vers')
    log.retention.summarise()
    assert not segment.summary_path(pdir, retired_base).exists() and not torn.exists()
    assert _sidecars(pdir) == [s.base for s in describe(pdir)[:-1]]
    log.close()


class HoldingClock(Clock):
    """The writer's clock, which also measures the partition each time the writer reads it — before each batch,
    and when a roll's pass starts (the batch that rolled written, nothing deleted yet: the partition's largest) —
    and holds the retention thread at its first pass until released, as a slow pass would."""

    def __init__(self, pdir: Path) -> None:
        super().__init__()
        self.pdir = pdir
        self.release = threading.Event()
        self.held = 0
        self.measured: list[int] = []

    def __call__(self) -> int:
        if threading.current_thread().name == "pinpipe-log-retention":
            self.held += 1
            self.release.wait(120)
        elif self.pdir.is_dir():
            self.measured.append(sum(f.stat().st_size for f in self.pdir.iterdir() if f.suffix in (".data", ".index")))
        return self.now


def test_appends_cannot_outrun_the_size_bound_while_the_retention_thread_is_held(tmp_path: Path) -> None:
    pdir = tmp_path / "log" / TOPIC / "0"
    clock = HoldingClock(pdir)
    bound = 4 * SEG
    log = EmbeddedLog(
        tmp_path / "log",
        RetentionPolicy(segment_bytes=SEG, retention_ms=-1, retention_bytes=bound, groups=()),
        clock,
    )
    try:
        log.ensure_topics([TOPIC])
        after_each: list[int] = []
        for start in range(0, 4000, 10):
            _fill(log, start, 10)
            log.commit("pinpipe-sink", TOPIC, {0: start + 10})
            after_each.append(sum(s.bytes for s in describe(pdir)))
        assert log.retention is not None
        rolls, held = log.retention.roll_passes, clock.held
    finally:
        clock.release.set()
        log.close()
    assert held == 1  # the thread sat in its first pass the whole time: only the rolls' passes deleted
    assert max(clock.measured) <= bound and max(after_each) <= bound
    retired = read_retired(pdir)
    assert rolls == len(segment.list_segments(pdir)) + len(retired.segments) - 1 >= 50
    assert len(clock.measured) >= 399 + rolls  # each batch but the first (no partition yet), and each roll's pass
    assert max(clock.measured) > bound - 2 * SEG  # the partition did fill up to where the rule deletes
    _assert_exact(pdir)
    reader = EmbeddedLog(tmp_path / "log")
    live = 0
    while block := reader.read(TOPIC, 0, retired.log_start + live, 1000):
        live += len(block)
    reader.close()
    assert retired.records + live == 4000 and retired.log_start + live == 4000
