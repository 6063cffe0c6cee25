"""Writers racing to create silver and quarantine on a fresh lake: exactly one row per ind, one per record.

Several real processes run the batch job at once on the same landed objects: through the public API, each
waiting at a shared instant after its start-up so their first commits really race, and through the CLI. Every one
of them finds no table; each must create it through a conflict-checked commit and then merge, so a loser of any
commit race re-reads the winner's progress instead of appending a second copy of the rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from pinpipe.lake import delta
from pinpipe.lake.store import Lake, landed_key
from pinpipe.synth.generate import generate_records
from pinpipe.tables import KINDS, RAW_TABLES

PREFIX = "0affea73130b"
INDS = 100
BAD = 5
WRITERS = 3


def _land(lake: Lake) -> None:
    for kind, records in generate_records(INDS, 7).items():
        bad = [{RAW_TABLES[kind].key: f"not-a-key-{i}"} for i in range(BAD)]  # quarantined: bad_key
        lines = [orjson.dumps(r) for r in [*records, *bad]]
        lake.put(landed_key(f"{PREFIX}.{kind}", 0, 0), b"\n".join(lines) + b"\n")


RACER = """
import sys, time
from pinpipe.batch.job import run_batch
from pinpipe.clean import prepare_cleaning
from pinpipe.engine import open_engine
from pinpipe.lake.store import Lake
from pinpipe.tables import KINDS

lake, start_at = Lake(sys.argv[1]), float(sys.argv[2])
with open_engine("duckdb") as engine:
    prepare_cleaning(engine, KINDS)  # start-up work before the barrier: the runs below start together
    time.sleep(max(0.0, start_at - time.time()))
    run_batch(lake, engine, sys.argv[3], gold=False)
"""


def _created_once(root: Path) -> None:
    """Each table's log holds one table creation: a loser of the race to create it must open the winner's table,
    not commit a second CREATE TABLE (a new table id) on top of it."""
    logs = [path.parent for path in root.rglob("_delta_log/00000000000000000000.json")]
    assert {log.parent.relative_to(root).as_posix() for log in logs} >= {
        *(f"{table}/{kind}" for table in ("silver", "quarantine") for kind in KINDS),
        "_meta/runs",
    }
    for log in logs:
        creating = [c.name for c in sorted(log.glob("*.json")) if b'"metaData"' in c.read_bytes()]
        assert creating == ["00000000000000000000.json"], f"{log.parent}: {creating}"


def _check(lake: Lake) -> None:
    _created_once(Path(lake.url.removeprefix("file://")))
    for kind in KINDS:
        silver = delta.read_table(lake, "silver", kind)
        assert silver is not None
        inds = silver.column("ind")
        assert silver.num_rows == INDS and len(pc.unique(inds)) == INDS, f"{kind}: {silver.num_rows} rows"
        quarantine = delta.read_table(lake, "quarantine", kind)
        assert quarantine is not None and quarantine.num_rows == BAD, f"{kind}: {quarantine.num_rows} quarantined"


def _wait(procs: list[subprocess.Popen[str]]) -> None:
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]


@pytest.mark.parametrize("round_", range(3))
def test_batch_jobs_starting_together_on_a_fresh_lake_write_each_row_once(tmp_path: Path, round_: int) -> None:
    root = tmp_path / "lake"
    lake = Lake(f"file://{root}")
    _land(lake)
    start_at = str(time.time() + 8.0)  # after every process has imported pinpipe and built its cleaning SQL
    args = [sys.executable, "-c", RACER, lake.url, start_at, PREFIX]
    _wait([subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(WRITERS)])
    _check(lake)


def test_batch_commands_racing_on_a_fresh_lake_exit_0_and_write_each_row_once(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = Lake(f"file://{root}")
    _land(lake)
    env = {**os.environ, "PINPIPE__PREFIX": PREFIX}
    cmd = [sys.executable, "-m", "pinpipe", "batch", "--lake", lake.url]
    _wait([subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)])
    _check(lake)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    _check(lake)
