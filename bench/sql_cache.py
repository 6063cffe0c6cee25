"""How long a fresh process takes to have the cleaning programs ready, without and with the SQL cache.

    python bench/sql_cache.py [--rounds 3]

Each measurement is a fresh child process that builds a DuckDB engine and runs cleaning's preparation for the
three kinds (what a real-size batch pays before any data work; on DuckDB gold is plain SQL over its state,
:mod:`pinpipe.batch.gold_sql`, so it has no program to generate). The baseline is
the same child with ``sql_cache=None`` (SQLFrame/sqlglot generate the SQL); the other reads a cache the first
child wrote. Prints the median of ``--rounds`` runs of each and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import sys, time
from pathlib import Path
from pinpipe.engine.duckdb import DuckDBEngine
from pinpipe.clean import prepare_cleaning
cache = Path(sys.argv[1]) if sys.argv[1] != "-" else None
t = time.perf_counter()
engine = DuckDBEngine(sql_cache=cache)
prepare_cleaning(engine)
print(time.perf_counter() - t)
"""


def child(cache: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, cache], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pinpipe-sqlcache-") as tmp:
        child(tmp)  # fills the cache
        cold, warm = [], []
        for _ in range(args.rounds):  # interleaved, so load changes hit both alike
            cold.append(child("-"))
            warm.append(child(tmp))
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"programs ready in a fresh process: generated {c:.2f} s, from the cache {w:.2f} s ({c / w:.1f}x)")
    print(json.dumps({"generated_s": round(c, 3), "cached_s": round(w, 3), "ratio": round(c / w, 2)}))


if __name__ == "__main__":
    main()
