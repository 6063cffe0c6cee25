"""Generator + SQLite loader throughput: rows/s written by ``init_source(GeneratedOrigin(N))`` (target >= 100k
rows/s over the three tables, N = 1M rows per table), against a baseline run in the same process: sqlite3's own
``executemany`` of pre-built tuples into the same schema (no generation, no SQLAlchemy).

    .venv/bin/python bench/generate.py [--rows N] [--baseline-rows N] [--dir DIR]

The baseline's tuples are generated first (not timed) for ``--baseline-rows`` rows per table, then inserted in one
transaction. The ratio is pinpipe's rows/s over the baseline's: the share of raw insert speed that survives
generating the rows and going through SQLAlchemy. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from pinpipe.source.database import METADATA, create_source_engine
from pinpipe.source.load import GeneratedOrigin, init_source
from pinpipe.synth.generate import generate
from pinpipe.tables import KINDS, RAW_TABLES


def pinpipe_load(db: Path, rows: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``init_source`` generating and loading ``rows`` rows per table."""
    engine = create_source_engine(f"sqlite:///{db}")
    started, cpu = time.perf_counter(), time.process_time()
    init_source(engine, GeneratedOrigin(rows, seed=0))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.dispose()
    return elapsed, cpu


def baseline_load(db: Path, rows: int) -> tuple[float, float]:
    """Wall and CPU seconds of sqlite3 inserting ``rows`` pre-built rows per table."""
    engine = create_source_engine(f"sqlite:///{db}")
    METADATA.create_all(engine)
    engine.dispose()
    prebuilt: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in KINDS}
    for block in generate(rows, seed=1):
        for kind in KINDS:
            prebuilt[kind] += [tuple(str(v) if hasattr(v, "isoformat") else v for v in row) for row in block.rows[kind]]
    conn = sqlite3.connect(db)
    started, cpu = time.perf_counter(), time.process_time()
    with conn:
        for kind in KINDS:
            marks = ", ".join("?" * len(RAW_TABLES[kind].columns))
            conn.executemany(f"INSERT INTO {RAW_TABLES[kind].name} VALUES ({marks})", prebuilt[kind])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per table for pinpipe (default 1M)")
    parser.add_argument("--baseline-rows", type=int, default=200_000, help="rows per table for the baseline")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base_wall, base_cpu = baseline_load(Path(tmp) / "baseline.db", args.baseline_rows)
        wall, cpu = pinpipe_load(Path(tmp) / "pinpipe.db", args.rows)
        size = (Path(tmp) / "pinpipe.db").stat().st_size
    base_n, n = 3 * args.baseline_rows, 3 * args.rows
    print(
        f"baseline  sqlite3 executemany, pre-built tuples: {base_n:>10,} rows  wall {base_wall:6.2f} s "
        f"= {base_n / base_wall:>9,.0f} rows/s   cpu {base_cpu:6.2f} s = {base_n / base_cpu:>9,.0f} rows/s"
    )
    print(
        f"pinpipe   generate + load (init_source):         {n:>10,} rows  wall {wall:6.2f} s "
        f"= {n / wall:>9,.0f} rows/s   cpu {cpu:6.2f} s = {n / cpu:>9,.0f} rows/s"
    )
    print(
        f"ratio pinpipe/baseline: wall {(n / wall) / (base_n / base_wall):.2f}, cpu {(n / cpu) / (base_n / base_cpu):.2f}"
        f"   target >= 100,000 rows/s (wall): {'met' if n / wall >= 100_000 else 'NOT met'}   database {size / 1e6:,.0f} MB"
    )
    print("(wall < cpu-bound figures means the machine was busy with other work: compare the cpu columns)")


if __name__ == "__main__":
    main()
