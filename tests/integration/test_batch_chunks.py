"""The batch job in bounded chunks (``batch.chunk_records``): the same lake as one unchunked run, whatever the cut.

Records are landed over both topics of a kind and several partitions, in short objects whose offsets follow the
send order within each partition (an ``ind`` always lands in the same partition, as the log places it), so the
oracle's send order is the order the latest-record rule compares.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from pinpipe.batch.job import BatchResult, run_batch
from pinpipe.engine import DuckDBEngine, Engine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake, landed_key
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS, Kind, stream_name, topic_name
from tests.fixtures.batch_lake import assert_batch_matches_oracle, land

PREFIX = "0affea73130b"
CHANGED = {"pin": ("title", "changed"), "geo": ("country", "Changed"), "user": ("age", 77)}
FIELDS = ("read", "inserted", "updated", "collapsed", "conflicts", "quarantined")


@pytest.fixture(scope="module")
def duck() -> Iterator[Engine]:
    with DuckDBEngine() as eng:
        yield eng


class SpreadLanding:
    """Lands records over ``<prefix>.<kind>`` and ``streaming-<prefix>-<kind>`` and ``partitions`` partitions:
    each partition's records in send order, cut into objects of 1–5 lines that alternate between the topics at
    random (with an occasional gap in the offsets). ``where[kind][i]`` is the i-th sent record's
    (topic, partition, offset)."""

    def __init__(self, lakes: Sequence[Lake], partitions: int = 3, seed: int = 0) -> None:
        self.lakes, self.partitions, self.rng = lakes, partitions, random.Random(seed)
        self.next: dict[tuple[Kind, int], int] = {}
        self.where: dict[Kind, list[tuple[str, int, int]]] = {kind: [] for kind in KINDS}

    def land(self, records: Mapping[Kind, Sequence[Any]]) -> None:
        for kind, rows in records.items():
            placed: dict[int, list[tuple[int, bytes]]] = {}
            base = len(self.where[kind])
            self.where[kind].extend([("", 0, 0)] * len(rows))
            for i, r in enumerate(rows):
                key = r.get("index" if kind == "pin" else "ind") if isinstance(r, dict) else None
                p = key % self.partitions if isinstance(key, int) else i % self.partitions
                placed.setdefault(p, []).append((base + i, r if isinstance(r, bytes) else orjson.dumps(r)))
            for p, lines in placed.items():
                i = 0
                while i < len(lines):
                    part = lines[i : i + self.rng.randint(1, 5)]
                    topic = self.rng.choice([topic_name(PREFIX, kind), stream_name(PREFIX, kind)])
                    start = self.next.get((kind, p), 0) + (3 if self.rng.random() < 0.1 else 0)
                    for lake in self.lakes:
                        lake.put(landed_key(topic, p, start), b"\n".join(line for _, line in part) + b"\n")
                    for n, (position, _) in enumerate(part):
                        self.where[kind][position] = (topic, p, start + n)
                    self.next[(kind, p)] = start + len(part)
                    i += len(part)


def _tables(lake: Lake) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        out[f"silver/{kind}"] = None if silver is None else silver.sort_by("ind").to_pylist()
        q = delta.read_table(lake, "quarantine", kind)
        out[f"quarantine/{kind}"] = None if q is None else sorted(q.to_pylist(), key=str)
    from pinpipe.batch.gold import GOLD_TABLES

    for name in GOLD_TABLES:
        gold = delta.read_table(lake, "gold", name)
        out[f"gold/{name}"] = None if gold is None else sorted(gold.to_pylist(), key=str)
    return out


def _counts(result: BatchResult) -> dict[Kind, tuple[int, ...]]:
    return {kind: tuple(getattr(run, f) for f in FIELDS) for kind, run in result.kinds.items()}


def _assert_spread_matches_oracle(
    lake: Lake, result: BatchResult, sent: Mapping[Kind, Sequence[Any]], where: Mapping[Kind, Sequence[Any]]
) -> None:
    expected = expected_output(sent)
    for kind in KINDS:
        got = delta.read_table(lake, "silver", kind)
        assert got is not None and got.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
        q = delta.read_table(lake, "quarantine", kind)
        got_q = (
            []
            if q is None
            else sorted(
                zip(
                    q["topic"].to_pylist(),
                    q["partition"].to_pylist(),
                    q["offset"].to_pylist(),
                    q["reason"].to_pylist(),
                    strict=True,
                )
            )
        )
        assert got_q == sorted((*where[kind][r.position], r.reason) for r in expected.quarantine[kind]), kind
        acc, run = expected.accounting[kind], result.kinds[kind]
        assert (run.read, run.inserted, run.updated, run.quarantined) == (acc.read, acc.written, 0, acc.quarantined)
        assert (run.collapsed, run.conflicts) == (acc.duplicates, acc.conflicts), kind


def _day_after(sent: Mapping[Kind, Sequence[Any]]) -> dict[Kind, list[Any]]:
    """The day after ``sent``: re-sends and changes of old ``ind`` s (new content), and new ``ind`` s, shuffled."""
    rng = random.Random(3)
    key = {"pin": "index", "geo": "ind", "user": "ind"}
    later: dict[Kind, list[Any]] = {}
    for kind, records in sent.items():
        good = [r for r in records if isinstance(r, dict) and isinstance(r.get(key[kind]), int)]
        olds = rng.sample(good, 60)
        field, value = CHANGED[kind]
        changed = [{**r, field: value} for r in olds]
        fresh = [dict(r, **{key[kind]: r[key[kind]] + 100_000}) for r in good[:40]]
        mixed = olds[:20] + changed + fresh + olds[20:40]
        rng.shuffle(mixed)
        later[kind] = mixed
    return later


@pytest.mark.parametrize(("rows", "seed", "chunk"), [(300, 1, 7), (900, 7, 7), (900, 7, 100)])
def test_chunked_run_equals_the_oracle(tmp_path: Path, duck: Engine, rows: int, seed: int, chunk: int) -> None:
    sent = send_list(rows, seed, resend_rate=0.1, conflict_rate=0.05, faults=0.05, iso_rate=0.3).by_kind()
    lake = Lake(f"file://{tmp_path}")
    land(lake, sent, per_object=97)
    result = run_batch(lake, duck, PREFIX, gold=False, chunk_records=chunk)
    assert_batch_matches_oracle(lake, result, sent)
    runs = delta.read_table(lake, "_meta", "runs")
    assert runs is not None and sorted(runs["kind"].to_pylist()) == sorted(KINDS)  # one row per kind, summed
    recorded = {row["kind"]: tuple(row[f] for f in FIELDS) for row in runs.to_pylist()}
    assert recorded == _counts(result)


def test_chunked_equals_unchunked_over_both_topics_and_partitions(tmp_path: Path, duck: Engine) -> None:
    """Two daily runs (the second re-sending, changing and adding ``ind`` s): chunks of 7 records leave silver,
    quarantine and gold exactly as one unchunked run does, and as the oracle says; the first run's accounting
    is the unchunked one's exactly, the second's but for which records of an old ``ind`` count as updates."""
    chunked, whole = Lake(f"file://{tmp_path / 'chunked'}"), Lake(f"file://{tmp_path / 'whole'}")
    landing = SpreadLanding([chunked, whole], partitions=3, seed=5)
    sent = send_list(700, 21, resend_rate=0.15, conflict_rate=0.1, faults=0.04, iso_rate=0.3).by_kind()
    landing.land(sent)
    first = run_batch(chunked, duck, PREFIX, chunk_records=7)
    assert _counts(first) == _counts(run_batch(whole, duck, PREFIX))
    _assert_spread_matches_oracle(chunked, first, sent, landing.where)
    assert _tables(chunked) == _tables(whole)
    later = _day_after(sent)
    landing.land(later)
    second = run_batch(chunked, duck, PREFIX, chunk_records=7)
    reference = run_batch(whole, duck, PREFIX)
    for kind in KINDS:
        # an ind silver held before the run, in several chunks: which of its records changed silver depends on
        # the cut (updated vs collapsed); what was read, inserted, quarantined and changed does not
        got, want = second.kinds[kind], reference.kinds[kind]
        assert (got.read, got.inserted, got.quarantined, got.conflicts) == (
            want.read,
            want.inserted,
            want.quarantined,
            want.conflicts,
        ), kind
        assert got.updated + got.collapsed == want.updated + want.collapsed and got.balanced, kind
    assert _tables(chunked) == _tables(whole)
    everything = {kind: [*sent[kind], *later[kind]] for kind in KINDS}
    expected = expected_output(everything)
    for kind in KINDS:
        assert first.kinds[kind].conflicts + second.kinds[kind].conflicts == expected.accounting[kind].conflicts
        silver = delta.read_table(chunked, "silver", kind)
        assert silver is not None and silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist()


def test_a_silver_table_without_the_bucket_column_counts_as_a_bucketed_one(tmp_path: Path, duck: Engine) -> None:
    """The two daily runs in chunks of 7 onto silver tables of an older release (the SPEC columns, no partitions:
    delta-rs's MERGE, conflicts read from silver before it) and onto bucketed ones (the merge compares the
    first records itself): every count of both runs is the same, and so is silver, which stays unpartitioned."""
    from deltalake import DeltaTable

    from pinpipe.tables import SILVER_SCHEMAS

    old, new = Lake(f"file://{tmp_path / 'old'}"), Lake(f"file://{tmp_path / 'new'}")
    for kind in KINDS:
        DeltaTable.create(old.table_uri("silver", kind), SILVER_SCHEMAS[kind])
    landing = SpreadLanding([old, new], partitions=3, seed=9)
    sent = send_list(500, 13, resend_rate=0.15, conflict_rate=0.1, faults=0.04, iso_rate=0.3).by_kind()
    for day in (sent, _day_after(sent)):
        landing.land(day)
        counts = [_counts(run_batch(lake, duck, PREFIX, gold=False, chunk_records=7)) for lake in (old, new)]
        assert counts[0] == counts[1]
        assert sum(c[FIELDS.index("conflicts")] for c in counts[0].values()) > 0  # the counts have work to do
    assert _tables(old) == _tables(new)
    for kind in KINDS:
        dt = delta.open_table(old, "silver", kind)
        assert dt is not None and not dt.metadata().partition_columns


def test_records_of_both_topics_at_one_offset_stay_in_one_chunk(tmp_path: Path, duck: Engine) -> None:
    """The latest-record rule breaks a tie of offsets by topic: a cut never falls between the two."""
    lakes = [Lake(f"file://{tmp_path / name}") for name in ("chunked", "whole")]
    a, b, c = {"index": 7, "title": "a"}, {"index": 7, "title": "b"}, {"index": 8, "title": "c"}
    for lake in lakes:
        lake.put(landed_key(topic_name(PREFIX, "pin"), 0, 0), orjson.dumps(a) + b"\n" + orjson.dumps(c) + b"\n")
        lake.put(landed_key(stream_name(PREFIX, "pin"), 0, 0), orjson.dumps(b) + b"\n")
    chunked = run_batch(lakes[0], duck, PREFIX, gold=False, chunk_records=1)
    whole = run_batch(lakes[1], duck, PREFIX, gold=False)
    assert _counts(chunked) == _counts(whole)
    silver = [delta.read_table(lake, "silver", "pin") for lake in lakes]
    assert silver[0] is not None and silver[1] is not None
    assert silver[0].sort_by("ind").to_pylist() == silver[1].sort_by("ind").to_pylist()
    assert silver[0].sort_by("ind")["title"].to_pylist() == ["b", "c"]  # streaming-… sorts after <prefix>.…


def test_crash_after_a_chunk_commit_then_rerun(tmp_path: Path, duck: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that dies after its third chunk's commit: the next run takes the rest, and the lake ends as one
    uninterrupted run leaves it (nothing lost, nothing doubled)."""
    crashed, whole = Lake(f"file://{tmp_path / 'crashed'}"), Lake(f"file://{tmp_path / 'whole'}")
    landing = SpreadLanding([crashed, whole], partitions=2, seed=9)
    sent = send_list(400, 17, resend_rate=0.15, conflict_rate=0.1, faults=0.05).by_kind()
    landing.land(sent)
    real = delta.merge_silver
    calls: list[int] = []

    def dies_after_three(*args: Any, **kwargs: Any) -> Any:
        if len(calls) == 3:
            raise RuntimeError("power cut")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(delta, "merge_silver", dies_after_three)
    with pytest.raises(RuntimeError, match="power cut"):
        run_batch(crashed, duck, PREFIX, chunk_records=7)
    monkeypatch.setattr(delta, "merge_silver", real)
    partial = delta.read_table(crashed, "silver", KINDS[0])
    assert partial is not None and 0 < partial.num_rows < len(expected_output(sent).silver[KINDS[0]])
    rerun = run_batch(crashed, duck, PREFIX, chunk_records=7)
    reference = run_batch(whole, duck, PREFIX)
    assert _tables(crashed) == _tables(whole)
    first = KINDS[0]
    assert 0 < rerun.kinds[first].read < reference.kinds[first].read  # three chunks were done before the cut
    for kind in KINDS[1:]:
        assert _counts(rerun)[kind] == _counts(reference)[kind]
    again = run_batch(crashed, duck, PREFIX, chunk_records=7)
    assert again.total.read == 0 and again.gold_written == []


def test_cli_batch_in_chunks_logs_each_chunk_and_balances(tmp_path: Path) -> None:
    """``pinpipe batch`` with ``PINPIPE__BATCH__CHUNK_RECORDS``: a log line per chunk, silver as the oracle says,
    and ``pinpipe accounting`` finds nothing lost or doubled."""
    sent = send_list(200, 4, resend_rate=0.1, conflict_rate=0.05, faults=0.05).by_kind()
    lake = Lake(f"file://{tmp_path / 'lake'}")
    land(lake, sent, per_object=50)
    env = {**os.environ, "PINPIPE__BATCH__CHUNK_RECORDS": "60"}
    pinpipe = [sys.executable, "-m", "pinpipe"]
    out = subprocess.run(
        [*pinpipe, "batch", "--lake", lake.url], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    for kind in KINDS:
        reads = len(sent[kind])
        chunks = -(-reads // 60)
        assert f"{kind}: chunk {chunks} committed" in out.stderr, out.stderr[-2000:]
        assert f"{kind}: chunk {chunks + 1} committed" not in out.stderr
    expected = expected_output(sent)
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None and silver.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist()
    acc = subprocess.run([*pinpipe, "accounting", "--lake", lake.url], capture_output=True, text=True, timeout=300)
    assert acc.returncode == 0, acc.stdout[-3000:] + acc.stderr[-2000:]
