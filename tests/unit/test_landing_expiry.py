"""Landing expiry (:mod:`pinpipe.lake.expiry`): which landed objects may go (age or size, committed by the batch,
never a partition's newest, only a prefix), and a real batch + expiry + accounting on a ``file://`` lake, with a
pass interrupted between its manifest and its deletes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.batch.job import run_batch
from pinpipe.checks.accounting import account
from pinpipe.checks.counts import PartitionLog
from pinpipe.checks.retired import check_expired_landed
from pinpipe.cli.landing_cmd import parse_duration_ms
from pinpipe.engine import DuckDBEngine, Engine
from pinpipe.errors import ConfigError, StoreUnavailableError
from pinpipe.lake import expiry
from pinpipe.lake.expiry import ExpiryPolicy, Landed, select
from pinpipe.lake.expiry_manifest import ExpiredObject, read_expired, read_manifests
from pinpipe.lake.store import Lake, landed_key
from pinpipe.synth.faults import send_list
from pinpipe.tables import KINDS, topic_name
from tests.fixtures.batch_lake import land

PREFIX = "0affea73130b"
HOUR = 3_600_000
NOW = 100 * HOUR


def _objs(*specs: tuple[int, int]) -> list[Landed]:
    """Objects of 10 lines each from (start, age in hours) pairs."""
    return [Landed(f"k{start}", start, 1000, NOW - age * HOUR) for start, age in specs]


def _starts(chosen: list[tuple[Landed, str]]) -> list[int]:
    return [o.start for o, _ in chosen]


def test_old_committed_objects_go_and_the_newest_stays() -> None:
    objects = _objs((0, 50), (10, 40), (20, 30))
    chosen, held = select(objects, 30, ExpiryPolicy(retention_ms=24 * HOUR), NOW)
    assert _starts(chosen) == [0, 10]
    assert {r for _, r in chosen} == {"age"}
    assert held == "newest"  # the last object is due and committed, yet the sink resumes after it


def test_objects_the_batch_has_not_committed_stay() -> None:
    objects = _objs((0, 50), (10, 40), (20, 30), (30, 30))
    chosen, held = select(objects, 15, ExpiryPolicy(retention_ms=24 * HOUR), NOW)
    assert _starts(chosen) == [0]  # the object at 10 ends at 20 > 15
    assert held == "uncommitted"
    assert select(objects, 20, ExpiryPolicy(retention_ms=24 * HOUR), NOW)[0] == [*chosen, (objects[1], "age")]
    assert select(objects, None, ExpiryPolicy(retention_ms=0), NOW) == ([], "uncommitted")  # no batch yet


def test_young_objects_stay_and_stop_the_walk() -> None:
    objects = _objs((0, 50), (10, 1), (20, 50), (30, 0))
    chosen, held = select(objects, 40, ExpiryPolicy(retention_ms=24 * HOUR), NOW)
    assert _starts(chosen) == [0] and held is None  # only a prefix: the old object at 20 waits for the one at 10
    assert _starts(select(objects, 40, ExpiryPolicy(retention_ms=HOUR), NOW)[0]) == [0, 10, 20]


def test_the_size_bound_deletes_the_oldest_committed_until_under_it() -> None:
    objects = _objs((0, 0), (10, 0), (20, 0), (30, 0))  # 4000 bytes, all young
    chosen, held = select(objects, 40, ExpiryPolicy(retention_bytes=2500), NOW)
    assert _starts(chosen) == [0, 10] and {r for _, r in chosen} == {"size"} and held is None
    assert select(objects, 40, ExpiryPolicy(retention_bytes=0), NOW) == ([*chosen, (objects[2], "size")], "newest")
    assert select(objects, 15, ExpiryPolicy(retention_bytes=0), NOW) == (chosen[:1], "uncommitted")


def test_no_bound_deletes_nothing() -> None:
    objects = _objs((0, 500), (10, 500))
    assert not ExpiryPolicy().enabled
    assert select(objects, 20, ExpiryPolicy(), NOW) == ([], None)


def test_durations() -> None:
    assert parse_duration_ms("7d", "--older-than") == 7 * 24 * HOUR
    assert parse_duration_ms("90s", "--older-than") == 90_000
    assert parse_duration_ms("500ms", "--older-than") == 500
    assert parse_duration_ms("2w", "--older-than") == 14 * 24 * HOUR
    for bad in ("7", "-1d", "1.5h", "7x", ""):
        with pytest.raises(ConfigError, match="--older-than"):
            parse_duration_ms(bad, "--older-than")


def test_the_log_below_the_expiry_boundary_must_number_the_expired_lines() -> None:
    part = PartitionLog(offsets=list(range(30)), hashes=list(range(30)), keys=[None] * 30)
    gone = [ExpiredObject(f"k{s}", "t", 0, s, 10, 100, "x", 0, (None,) * 10) for s in (0, 10)]
    assert check_expired_landed(gone, part, 0) == (20, 0, 0)
    assert check_expired_landed(gone[1:], part, 0) == (20, 10, 0)  # lines 0-9 were neither present nor expired
    retired_part = PartitionLog(offsets=list(range(5, 30)), hashes=list(range(25)), keys=[None] * 25)
    assert check_expired_landed(gone, retired_part, 5) == (15, 0, 0)  # lines below the log start: retired counts


# ---------------------------------------------------------------------------------------------- with a real batch


@pytest.fixture(scope="module")
def duck() -> Iterator[Engine]:
    with DuckDBEngine() as eng:
        yield eng


class FailingDeletes(Lake):
    """A file lake whose deletes fail after ``allowed`` of them (the store going away mid-pass)."""

    allowed = 1 << 30

    def delete(self, key: str) -> None:
        if self.allowed <= 0:
            raise StoreUnavailableError(f"could not delete {key}: the store went away")
        self.allowed -= 1
        super().delete(key)


def _landed(lake: Lake) -> list[str]:
    return [o.key for o in lake.list("topics/")]


def _balanced(lake: Lake, behind: int = 0) -> dict[str, tuple[int | None, int | None]]:
    """Accounting over the lake balances, with ``behind`` landed records per topic the batch has not processed."""
    report = account(lake, PREFIX)
    assert report.failures(allow_lag=True) == [], report.findings
    assert [f.records for f in report.findings if f.problem == "behind"] == ([behind] * len(KINDS) if behind else [])
    return {t.topic: (t.landed, t.expired) for t in report.topics}


def test_expire_after_a_batch_keeps_accounting_and_reruns_exact(tmp_path: Path, duck: Engine) -> None:
    sent = send_list(600, 5, resend_rate=0.1, faults=0.05).by_kind()
    lake = FailingDeletes(f"file://{tmp_path}")
    land(lake, sent, per_object=100)
    first = run_batch(lake, duck, PREFIX, gold=False)
    before = _balanced(lake)
    # Records landed after the run, in two objects: the batch has not committed them, so both stay (the first
    # because the batch has not passed its end, the second as the newest too).
    for kind, rows in sent.items():
        land(lake, {kind: rows[:7]}, per_object=4, first_offset=len(rows))
    now = int(time.time() * 1000) + 2 * HOUR
    policy = ExpiryPolicy(retention_ms=HOUR)
    plans = expiry.plan(lake, PREFIX, policy, now)
    assert all(p.held == "uncommitted" for p in plans) and all(p.due for p in plans)

    lake.allowed = 2  # the pass dies after its first manifest and two deletes
    with pytest.raises(StoreUnavailableError):
        expiry.expire(lake, PREFIX, plans, now)
    manifests = read_manifests(lake)
    assert len(manifests) == 1
    leftover = [o.key for o in manifests[0].objects][2:]
    assert leftover and all(k in _landed(lake) for k in leftover)  # recorded, not deleted yet
    _balanced(lake, behind=7)  # a listed object still there counts once, as expired

    lake.allowed = 1 << 30
    plans = expiry.plan(lake, PREFIX, policy, now)
    assert sorted(k for p in plans for k in p.leftover) == sorted(leftover)
    result = expiry.expire(lake, PREFIX, plans, now)
    assert sorted(result.finished) == sorted(leftover)
    expired = read_expired(lake)
    for kind in KINDS:
        topic = topic_name(PREFIX, kind)
        n = len(sent[kind])
        keys = _landed(lake)
        # every committed object went; the two late ones stay
        assert [k for k in keys if f"/{topic}/" in k] == [landed_key(topic, 0, n), landed_key(topic, 0, n + 4)]
        assert sum(o.records for o in expired[(topic, 0)]) == n
        assert [o.start for o in expired[(topic, 0)]] == list(range(0, n, 100))
    after = _balanced(lake, behind=7)
    for topic, (landed, gone) in after.items():
        assert landed == before[topic][0] + 7 and gone and gone > 0  # landed = present + expired
    second = run_batch(lake, duck, PREFIX, gold=False)
    assert sum(r.read for r in second.kinds.values()) == 7 * len(KINDS)  # only the late records
    third = run_batch(lake, duck, PREFIX, gold=False)
    assert sum(r.read for r in third.kinds.values()) == 0
    assert sum(r.read for r in first.kinds.values()) == sum(len(v) for v in sent.values())
    _balanced(lake)
    # every record is now committed: a further pass takes the object before the newest, never the newest
    again = expiry.expire(lake, PREFIX, expiry.plan(lake, PREFIX, policy, now), now)
    assert len(again.expired) == len(KINDS)
    for kind in KINDS:
        topic = topic_name(PREFIX, kind)
        assert [k for k in _landed(lake) if f"/{topic}/" in k] == [landed_key(topic, 0, len(sent[kind]) + 4)]
    _balanced(lake)


def test_accounting_names_what_expiry_must_never_do(tmp_path: Path, duck: Engine) -> None:
    sent = send_list(200, 9).by_kind()
    lake = Lake(f"file://{tmp_path}")
    land(lake, sent, per_object=50)
    run_batch(lake, duck, PREFIX, gold=False)
    topic = topic_name(PREFIX, "pin")
    n = len(sent["pin"])
    land(lake, {"pin": sent["pin"][:6]}, per_object=3, first_offset=n)  # two objects the batch has not committed
    plans = expiry.plan(lake, PREFIX, ExpiryPolicy(retention_bytes=0))
    pin = next(p for p in plans if p.topic == topic)
    assert pin.held == "uncommitted" and pin.end == n
    # Deleting an uncommitted object, recorded or not, is caught: a hand-made plan that ignores the rule …
    forced = [p for p in plans if p.topic == topic]
    forced[0].due = [(o, "size") for o in forced[0].present[:-1]]
    forced[0].position = n + 6
    expiry.expire(lake, PREFIX, forced)
    report = account(lake, PREFIX)
    found = sorted((f.stage, f.problem, f.records) for f in report.failures())
    assert found == [("batch", "behind", 3), ("batch", "lost", 3)]  # the newest stays, not batched yet
    # … and so is an object deleted without a manifest (a lifecycle rule behind the pipeline's back; without --log
    # accounting sees the batch holding more than is landed).
    geo = topic_name(PREFIX, "geo")
    lake.delete(landed_key(geo, 0, 0))
    geo_found = [(f.stage, f.problem, f.records) for f in account(lake, PREFIX).failures() if f.subject == "geo"]
    assert geo_found == [("batch", "doubled", 50)] * 2  # runs read more than is landed; silver rows with no record


def test_landing_settings_from_the_environment(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pinpipe.config import load_settings

    assert not ExpiryPolicy.from_settings(load_settings().landing).enabled  # kept forever unless set
    monkeypatch.setenv("PINPIPE__LANDING__RETENTION_MS", "604800000")
    monkeypatch.setenv("PINPIPE__LANDING__EXPIRE_WITH_BATCH", "false")
    landing = load_settings().landing
    assert ExpiryPolicy.from_settings(landing) == ExpiryPolicy(retention_ms=604_800_000)
    assert landing.expire_with_batch is False
    monkeypatch.setenv("PINPIPE__LANDING__RETENTION_BYTES", "-2")
    with pytest.raises(ConfigError, match="PINPIPE__LANDING__RETENTION_BYTES"):
        load_settings()


# ---------------------------------------------------------------------------------------------- reconcile, pure


def _reconcile_with(expired: list[ExpiredObject]) -> list[tuple[str, str, int]]:
    """A partition whose log retired offsets 0-9 and serves 10-29; expiry recorded ``expired``; 20-29 are present."""
    from pinpipe.checks.accounting import reconcile
    from pinpipe.checks.counts import KindLake, LakeTally, LandedObject
    from pinpipe.log.retired import Retired, RetiredSegment

    topic = topic_name(PREFIX, "pin")
    lines = [b'{"index": %d}' % i for i in range(30)]
    part = PartitionLog(list(range(10, 30)), [hash(v) for v in lines[10:]], [b"%d" % i for i in range(10, 30)])
    part.committed = 30
    present = LandedObject(landed_key(topic, 0, 20), 20, [hash(v) for v in lines[20:]], lines[20:])
    kinds = {k: KindLake() for k in KINDS}
    kinds["pin"] = KindLake(
        runs={"read": 30, "inserted": 30, "updated": 0, "collapsed": 0, "quarantined": 0},
        run_count=1,
        silver_inds=list(range(30)),
        silver_exists=True,
        batch_txns={(topic, 0): 30},
    )
    tally = LakeTally({(topic, 0): [present]}, kinds, {(topic, 0): expired} if expired else {})
    retired = {(topic, 0): Retired(10, (RetiredSegment(0, 10, 10, 500, 0, 0, 10, 0),))}
    report = reconcile(PREFIX, None, {(topic, 0): part}, tally, retired)
    row = next(t for t in report.topics if t.topic == topic)
    assert row.landed == 10 * (1 + len(expired))  # present + expired
    return sorted((f.stage, f.problem, f.records) for f in report.failures())


def _gone(start: int) -> ExpiredObject:
    topic = topic_name(PREFIX, "pin")
    return ExpiredObject(landed_key(topic, 0, start), topic, 0, start, 10, 130, "x", 0, tuple(range(start, start + 10)))


def test_expired_lines_below_and_above_the_log_start_balance() -> None:
    assert _reconcile_with([_gone(0), _gone(10)]) == []


def test_an_expired_object_missing_from_its_manifest_is_lost() -> None:
    # offsets 10-19 are in the log, neither present nor recorded: the sink stage misses them, and the batch holds
    # more than is landed (its runs read 30; silver has inds no landed record carries)
    expected = [("batch", "doubled", 10), ("batch", "doubled", 10), ("sink", "lost", 10)]
    assert _reconcile_with([_gone(0)]) == expected
    assert _reconcile_with([_gone(10)]) == expected  # 0-9: retired by the log and not recorded as landed
