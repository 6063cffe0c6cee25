"""Incremental gold equals a full recompute after every step of random silver histories.

Silver is changed the ways writers change it — merges of new ``ind`` s, updates of old ``ind`` s that move them
between groups (country, category, age group, year, follower count, user), identical re-sends, rows of one kind
only (as a stream micro-batch may commit them), compaction — and after each step
:func:`pinpipe.batch.gold_state.refresh_gold` must leave gold tables identical to
:func:`pinpipe.batch.gold.compute_gold_from_arrow` over the same silver, having folded the changes in (not
recomputed) whenever the history allowed it.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pinpipe.batch import gold_sql, gold_state, gold_store
from pinpipe.batch.gold import GOLD_TABLES, compute_gold_from_arrow, read_gold_tables
from pinpipe.batch.job import run_batch
from pinpipe.engine import DuckDBEngine, Engine
from pinpipe.errors import CommitConflictError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.stream.compaction import compact_table
from pinpipe.tables import KINDS, SILVER_SCHEMAS, Kind
from tests.fixtures.batch_lake import land

PREFIX = "0affea73130b"


@pytest.fixture(scope="module")
def duck() -> Iterator[Engine]:
    with DuckDBEngine() as engine:
        yield engine


@pytest.fixture(autouse=True)
def fold_small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tables are a few files each, which every change rewrites: fold changes in all the same (a real
    table's daily change rewrites a fraction of it), so the incremental path is what is tested."""
    monkeypatch.setattr(gold_state, "REBUILD_FRACTION", float("inf"))


def _pick(rng: random.Random, values: list[Any], none: float = 0.1) -> Any:
    return None if rng.random() < none else rng.choice(values)


def _at(rng: random.Random, first: int, last: int) -> dt.datetime:
    return dt.datetime(rng.randint(first, last), rng.randint(1, 12), 1, rng.choice([0, 23]), tzinfo=dt.UTC)


def _row(rng: random.Random, kind: Kind, ind: int) -> dict[str, Any]:
    """A silver row drawn from small vocabularies, so groups collide, ties happen and users repeat."""
    if kind == "pin":
        return {
            "ind": ind,
            "title": rng.choice(["a", "b"]),  # not read by gold: a change of it alone must change nothing
            "follower_count": _pick(rng, [5, 10, 10, 900, 8_000_000]),
            "poster_name": _pick(rng, ["Ann", "Bob", "Cy"]),
            "category": _pick(rng, ["art", "diy", "travel"]),
        }
    if kind == "geo":
        return {
            "ind": ind,
            "country": _pick(rng, ["Aland", "Brazil", "Chad"]),
            "coordinates": [0.0, 0.0],
            "timestamp": _at(rng, 2016, 2023),
        }
    return {
        "ind": ind,
        "user_name": _pick(rng, ["Ann Lee", "Bob Ray", "Cy Dee"], none=0.05),
        "age": _pick(rng, [17, 18, 24, 25, 36, 50, 51, 60], none=0.05),
        "date_joined": _at(rng, 2014, 2021),
    }


def _merge(lake: Lake, kind: Kind, rows: list[dict[str, Any]], step: int) -> None:
    table = pa.Table.from_pylist(rows, schema=SILVER_SCHEMAS[kind])
    delta.merge_silver(lake, kind, table, app_txns={f"test:{kind}": step})


def _assert_gold_is_full_recompute(lake: Lake, duck: Engine) -> None:
    silver = {k: t for k in KINDS if (t := delta.read_table(lake, "silver", k)) is not None}
    expected = compute_gold_from_arrow(duck, silver)
    got = read_gold_tables(lake)
    for name in GOLD_TABLES:
        assert got[name].to_pylist() == expected[name].to_pylist(), name


@pytest.mark.parametrize(("seed", "chain"), [(1, 32), (2, 32), (3, 3)])
def test_random_histories_match_a_full_recompute_after_every_step(
    tmp_path: Path, duck: Engine, seed: int, chain: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gold_state, "MAX_CHAIN", chain)  # 3: the state is written whole again every third change
    rng = random.Random(seed)
    lake = Lake(f"file://{tmp_path}")
    conn = duck.duckdb()
    next_ind = 0
    modes: list[tuple[str, str]] = []
    later = ["insert", "insert", "update", "update", "update", "update", "resend", "one_kind", "one_kind", "compact"]
    for step, action in enumerate(["insert", *rng.sample(later, len(later)), "compact", "update"], start=1):
        known = list(range(next_ind))
        for kind in KINDS:
            if action == "insert":
                inds = list(range(next_ind, next_ind + rng.randint(20, 60)))
                inds += rng.sample(known, min(len(known), 5))  # with a few updates
            elif action == "update":
                inds = rng.sample(known, min(len(known), rng.randint(1, 15)))
            elif action == "one_kind":
                inds = rng.sample(known, min(len(known), 8)) if kind == "user" else []
                inds += list(range(next_ind, next_ind + 5)) if kind == "pin" else []  # pins without geo/user yet
            else:
                inds = []
            if action == "resend":  # the rows silver holds, merged again: nothing changes
                held = delta.read_table(lake, "silver", kind)
                assert held is not None
                _merge(lake, kind, held.slice(0, 10).to_pylist(), step)
            elif action == "compact":
                compact_table(lake, "silver", kind)
            elif inds:
                _merge(lake, kind, [_row(rng, kind, i) for i in sorted(set(inds))], step)
        next_ind += 60 if action == "insert" else 5 if action == "one_kind" else 0
        done = gold_state.refresh_gold(lake, conn)
        modes.append((action, done.mode))
        _assert_gold_is_full_recompute(lake, duck)
        again = gold_state.refresh_gold(lake, conn)
        assert (again.mode, again.written) == ("unchanged", [])
    assert modes[0] == ("insert", "full")
    for action, mode in modes[1:]:  # every later change was folded in (a step that committed nothing: no work)
        assert mode == "incremental" or (action in ("resend", "compact") and mode == "unchanged"), modes
    assert {a for a, _ in modes} >= {"insert", "update", "one_kind"}, modes


def test_missing_history_state_or_file_falls_back_to_a_full_recompute(tmp_path: Path, duck: Engine) -> None:
    rng = random.Random(9)
    lake = Lake(f"file://{tmp_path}")
    conn = duck.duckdb()

    def change(step: int, every: int) -> None:
        for kind in KINDS:
            _merge(lake, kind, [_row(rng, kind, i) for i in range(0, 120, every)], step)

    change(1, 1)
    assert gold_state.refresh_gold(lake, conn).mode == "full"
    # the commits since the state cleaned up behind a checkpoint: their actions are unknown
    since = delta.table_version(lake, "silver", "pin")
    assert since is not None
    change(2, 3)
    change(2, 4)
    pin = delta.open_table(lake, "silver", "pin")
    assert pin is not None and pin.version() > since + 1
    pin.create_checkpoint()
    (tmp_path / "silver" / "pin" / "_delta_log" / f"{since + 1:020d}.json").unlink()
    assert gold_state.refresh_gold(lake, conn).mode == "full"
    _assert_gold_is_full_recompute(lake, duck)
    # no state table: rebuilt from whole silver
    change(3, 5)
    shutil.rmtree(tmp_path / "_meta" / "gold_state")
    assert gold_state.refresh_gold(lake, conn).mode == "full"
    _assert_gold_is_full_recompute(lake, duck)
    # a file the log names as removed since the state is gone (vacuumed)
    change(4, 7)
    geo = delta.open_table(lake, "silver", "geo")
    assert geo is not None
    live = {Path(uri).resolve() for uri in geo.file_uris()}
    dead = [path for path in (tmp_path / "silver" / "geo").rglob("*.parquet") if path.resolve() not in live]
    assert dead, "the merge rewrote geo files"
    for path in dead:
        path.unlink()
    assert gold_state.refresh_gold(lake, conn).mode == "full"
    _assert_gold_is_full_recompute(lake, duck)
    # and with history intact again, the next change is folded in
    change(5, 11)
    assert gold_state.refresh_gold(lake, conn).mode == "incremental"
    _assert_gold_is_full_recompute(lake, duck)


def test_batch_runs_keep_gold_incremental_and_exact(
    tmp_path: Path, duck: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    from pinpipe.synth.faults import send_list

    caplog.set_level(logging.INFO, logger="pinpipe.batch.gold_state")

    lake = Lake(f"file://{tmp_path}")
    sent = send_list(400, 5, resend_rate=0.1, conflict_rate=0.1, faults=0.05).by_kind()
    cut = {k: len(v) // 2 for k, v in sent.items()}
    land(lake, {k: v[: cut[k]] for k, v in sent.items()}, per_object=97)
    first = run_batch(lake, duck, PREFIX)
    assert first.gold_written == list(GOLD_TABLES)
    _assert_gold_is_full_recompute(lake, duck)
    for kind, records in sent.items():  # the rest, with records re-keyed onto old inds (updates)
        land(lake, {kind: records[cut[kind] :]}, per_object=97, first_offset=cut[kind])
    run_batch(lake, duck, PREFIX)
    _assert_gold_is_full_recompute(lake, duck)
    modes = [r.fields["mode"] for r in caplog.records if r.getMessage() == "gold refreshed"]  # type: ignore[attr-defined]
    assert modes == ["full", "incremental"]


def test_two_runs_folding_onto_one_state_only_one_counts(tmp_path: Path, duck: Engine) -> None:
    rng = random.Random(4)
    lake = Lake(f"file://{tmp_path}")
    conn = duck.duckdb()
    for kind in KINDS:
        _merge(lake, kind, [_row(rng, kind, i) for i in range(50)], 1)
    gold_state.refresh_gold(lake, conn)
    stored = gold_store.read_state(lake)
    assert stored is not None
    for kind in KINDS:
        _merge(lake, kind, [_row(rng, kind, i) for i in range(40, 70)], 2)
    assert gold_state.refresh_gold(lake, conn).mode == "incremental"  # folded onto the state at stored.version
    # a second run that read the same state commits its change onto it too: it must not count
    late = pa.Table.from_pylist(
        [{"state": "cat_country", "country": "Aland", "category": "art", "n": 1000}], schema=gold_sql.STATE_SCHEMA
    )
    with pytest.raises(CommitConflictError):
        gold_store.append_change(lake, late, stored.meta, stored.version)
    after = gold_store.read_state(lake)
    assert after is not None and len(after.chain) == 2  # the whole state and the first change
    gold_state.refresh_gold(lake, conn)
    _assert_gold_is_full_recompute(lake, duck)
    assert gold_state.refresh_gold(lake, conn).mode == "unchanged"


def test_a_change_that_rewrote_most_of_silver_is_rebuilt_from_it(
    tmp_path: Path, duck: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gold_state, "REBUILD_FRACTION", 0.5)  # the default
    rng = random.Random(6)
    lake = Lake(f"file://{tmp_path}")
    conn = duck.duckdb()
    for step in (1, 2):
        for kind in KINDS:
            _merge(lake, kind, [_row(rng, kind, i) for i in range(0, 90, step)], step)
        assert gold_state.refresh_gold(lake, conn).mode == "full"  # every file rewritten: one scan is cheaper
        _assert_gold_is_full_recompute(lake, duck)


def test_a_rebuild_that_runs_out_of_memory_is_tried_again_with_the_next_limit(
    tmp_path: Path, duck: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole-state rebuild over a limit DuckDB cannot work within is retried under the next one, logged, and its
    gold is exact; with no next limit the error stands."""
    lake = Lake(f"file://{tmp_path / 'lake'}")
    rng = random.Random(5)
    for kind in KINDS:
        _merge(lake, kind, [_row(rng, kind, i) for i in range(3_000)], 1)
    monkeypatch.setattr(gold_state, "REBUILD_MEMORY", ("1MB",))
    with pytest.raises(Exception, match="Out of Memory"):
        gold_state.refresh_gold(lake, duck.duckdb())
    monkeypatch.setattr(gold_state, "REBUILD_MEMORY", ("1MB", "1GB"))
    with caplog.at_level(logging.WARNING, logger="pinpipe.batch.gold_state"):
        gold_state.refresh_gold(lake, duck.duckdb())
    assert any("out of memory" in r.getMessage() for r in caplog.records)
    _assert_gold_is_full_recompute(lake, duck)
