"""The batch job end to end on a file:// lake: oracle equality, crash safety, idempotence, engine parity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pinpipe.batch.job import run_batch
from pinpipe.engine import DuckDBEngine, Engine, open_engine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS
from tests.fixtures.batch_lake import assert_batch_matches_oracle, land

PREFIX = "0affea73130b"


@pytest.fixture(scope="module")
def duck() -> Iterator[Engine]:
    with DuckDBEngine() as eng:
        yield eng


def _versions(lake: Lake) -> dict[str, int | None]:
    parts = [("silver", k) for k in KINDS] + [("quarantine", k) for k in KINDS]
    return {"/".join(p): delta.table_version(lake, *p) for p in parts}


@pytest.mark.parametrize(("rows", "seed"), [(300, 1), (1200, 7)])
def test_batch_equals_oracle(tmp_path: Path, duck: Engine, rows: int, seed: int) -> None:
    sent = send_list(rows, seed, resend_rate=0.1, conflict_rate=0.05, faults=0.05, iso_rate=0.3).by_kind()
    lake = Lake(f"file://{tmp_path}")
    land(lake, sent, per_object=97)
    result = run_batch(lake, duck, PREFIX, gold=False)
    assert_batch_matches_oracle(lake, result, sent)


def test_crash_between_quarantine_and_silver_then_rerun(
    tmp_path: Path, duck: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = send_list(400, 3, resend_rate=0.1, faults=0.05).by_kind()
    lake = Lake(f"file://{tmp_path}")
    land(lake, sent, per_object=150)
    real = delta.merge_silver

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("power cut")

    monkeypatch.setattr(delta, "merge_silver", crash)
    with pytest.raises(RuntimeError):
        run_batch(lake, duck, PREFIX)
    monkeypatch.setattr(delta, "merge_silver", real)
    first = run_batch(lake, duck, PREFIX)
    expected = expected_output(sent)
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None and silver.num_rows == len(expected.silver[kind])
        quarantine = delta.read_table(lake, "quarantine", kind)
        assert (0 if quarantine is None else quarantine.num_rows) == len(expected.quarantine[kind])
        assert first.kinds[kind].balanced
    assert len(first.gold_written) == 9
    before = _versions(lake)
    gold_before = {n: delta.table_version(lake, "gold", n) for n in first.gold_written}
    again = run_batch(lake, duck, PREFIX)
    assert again.total.read == 0 and again.gold_written == []
    assert _versions(lake) == before
    assert {n: delta.table_version(lake, "gold", n) for n in first.gold_written} == gold_before
    # new data lands after the first objects: only it is processed
    more = send_list(50, 9).by_kind()
    shifted = {
        k: [dict(r, **({"index": r["index"] + 10_000} if k == "pin" else {"ind": r["ind"] + 10_000})) for r in v]
        for k, v in more.items()
    }
    land(lake, shifted, per_object=150, first_offset=len(sent["pin"]))
    third = run_batch(lake, duck, PREFIX)
    assert third.kinds["pin"].read == 50 and third.kinds["pin"].inserted == 50
    runs = delta.read_table(lake, "_meta", "runs")
    assert runs is not None and runs.num_rows == 9 and set(runs["path"].to_pylist()) == {"batch"}


def test_conflicts_count_changes_against_silver_across_runs(tmp_path: Path, duck: Engine) -> None:
    lake = Lake(f"file://{tmp_path}")
    a, b = {"index": 7, "title": "a"}, {"index": 7, "title": "b"}
    land(lake, {"pin": [a, {"index": 8}]})
    assert run_batch(lake, duck, PREFIX, gold=False).kinds["pin"].conflicts == 0
    land(lake, {"pin": [b, a, {"index": 8}]}, first_offset=2)  # a → b → a: two changes; 8 unchanged
    second = run_batch(lake, duck, PREFIX, gold=False).kinds["pin"]
    assert (second.conflicts, second.updated, second.collapsed, second.read) == (2, 0, 3, 3)


def test_conflicts_summed_over_runs_equal_the_oracle(tmp_path: Path, duck: Engine) -> None:
    sent = send_list(500, 11, resend_rate=0.2, conflict_rate=0.2, faults=0.02).by_kind()
    lake = Lake(f"file://{tmp_path}")
    cuts = {kind: len(records) // 2 for kind, records in sent.items()}
    land(lake, {kind: records[: cuts[kind]] for kind, records in sent.items()}, per_object=97)
    first = run_batch(lake, duck, PREFIX, gold=False)
    for kind, records in sent.items():
        land(lake, {kind: records[cuts[kind] :]}, per_object=97, first_offset=cuts[kind])
    second = run_batch(lake, duck, PREFIX, gold=False)
    expected = expected_output(sent)
    for kind in KINDS:
        runs = first.kinds[kind], second.kinds[kind]
        assert sum(r.conflicts for r in runs) == expected.accounting[kind].conflicts, kind
        assert sum(r.read for r in runs) == expected.accounting[kind].read, kind


@pytest.mark.slow
def test_duckdb_and_spark_give_identical_silver_on_the_sample(tmp_path: Path, duck: Engine) -> None:
    from pinpipe.source.sample import load_sample_records

    records = {kind: load_sample_records(kind) for kind in KINDS}
    tables: dict[str, dict[str, pa.Table]] = {}
    for name in ("duckdb", "spark"):
        lake = Lake(f"file://{tmp_path / name}")
        land(lake, records, per_object=1000)
        engine = duck if name == "duckdb" else open_engine("spark")
        try:
            run_batch(lake, engine, PREFIX, gold=False)
        finally:
            if engine is not duck:
                engine.close()
        tables[name] = {k: t.sort_by("ind") for k in KINDS if (t := delta.read_table(lake, "silver", k)) is not None}
    for kind in KINDS:
        assert tables["duckdb"][kind].equals(tables["spark"][kind]), kind


def test_cli_results_equal_a_full_recompute_after_each_daily_run(tmp_path: Path) -> None:
    """``pinpipe batch`` twice (the second run also updating old ``ind`` s), then ``pinpipe results``: gold as the
    oracle computes it over the silver the runs left, whether the run folded its change in or rebuilt."""
    import json
    import subprocess
    import sys

    from tests.fixtures.gold_cases import oracle

    sent = send_list(600, 13, resend_rate=0.1, conflict_rate=0.1, faults=0.03).by_kind()
    lake = Lake(f"file://{tmp_path}")
    cut = {kind: len(records) * 2 // 3 for kind, records in sent.items()}
    batches = [{k: v[: cut[k]] for k, v in sent.items()}, {k: v[cut[k] :] for k, v in sent.items()}]
    for n, batch in enumerate(batches):
        for kind, records in batch.items():
            land(lake, {kind: records}, per_object=97, first_offset=0 if n == 0 else cut[kind])
        pinpipe = [sys.executable, "-m", "pinpipe"]
        subprocess.run([*pinpipe, "batch", "--lake", lake.url], check=True, capture_output=True, timeout=300)
        out = subprocess.run(
            [*pinpipe, "results", "--lake", lake.url, "--format", "json"], check=True, capture_output=True, timeout=120
        )
        silver = {k: t for k in KINDS if (t := delta.read_table(lake, "silver", k)) is not None}
        assert json.loads(out.stdout) == oracle(silver), f"after run {n + 1}"
    state = delta.table_version(lake, "_meta", "gold_state")
    assert state is not None and state >= 1  # both runs committed gold's state
