"""What one commit costs a writer that keeps its delta-rs handle, as the table's file count grows.

    python bench/delta_commit.py [--files 0,300,3000,10000] [--commits 40]

The stream worker's merge ends with two delta-rs calls on its kept handle: the commit
(``create_write_transaction``, as :func:`pinpipe.lake.data_files.commit_files` makes it) and the reload that
brings the handle to the version it committed (``update_incremental``: the commit does not advance the handle).
Both rebuild the snapshot's list of active files, so each costs time in proportion to the files of the table, not
to the files the commit adds. This measures the two on tables of a silver pin table's shape: ``F`` data files
spread over its 16 buckets, each with the statistics pinpipe writes (``numRecords``, ``nullCount`` of every
column, ``minValues``/``maxValues`` of the integer ones), added by one commit, then checkpointed
(a stream worker's table has a checkpoint at most 100 commits back). The files are never read, so they are not
written: a commit checks no data file.

Per size, ``--commits`` commits like a micro-batch's (one added file with its statistics, the application
transaction of its log position), each followed by the reload; printed: the median and p90 of each call and their
sum per merge, and the sum as a ratio to the smallest size (the same-run baseline). Then as many commits of the
same kind through the log head a stream worker now commits with (:class:`pinpipe.lake.log_head.LogHead`: a look
for a newer commit file, then its own put-if-absent commit file), on the same table: what replaced the two calls. The last line is one JSON
object. Not a test: the figures depend on the machine (run it on a quiet one, and note ``uptime``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

BUCKETS = 16
ROWS_PER_FILE = 3_000


def _stats(low: int) -> str:
    """Statistics of a pin file of ``ROWS_PER_FILE`` rows from ``ind`` = ``low`` (what ``file_stats`` writes)."""
    columns = ["ind", "unique_id", "title", "description", "follower_count", "poster_name", "tag_list"]
    columns += ["is_image_or_video", "image_src", "save_location", "category"]
    return orjson.dumps(
        {
            "numRecords": ROWS_PER_FILE,
            "minValues": {"ind": low, "follower_count": 0},
            "maxValues": {"ind": low + ROWS_PER_FILE * BUCKETS, "follower_count": 9_000_000},
            "nullCount": {c: 3 for c in columns},
        }
    ).decode()


def _table(root: Path, files: int) -> str:
    """A bucketed table at ``root`` holding ``files`` data files (not written), checkpointed."""
    import pyarrow as pa
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    from pinpipe.tables import silver_table_schema

    now = int(time.time() * 1000)
    adds = [
        AddAction(
            f"bucket={i % BUCKETS}/part-{i:06d}.parquet",
            1 << 20,
            {"bucket": str(i % BUCKETS)},
            now,
            True,
            _stats(i * ROWS_PER_FILE),
        )
        for i in range(files)
    ]
    schema: pa.Schema = silver_table_schema("pin")
    uri = str(root)
    create_table_with_add_actions(uri, Schema.from_arrow(schema), adds, mode="append", partition_by=["bucket"])
    DeltaTable(uri).create_checkpoint()
    return uri


def measure(uri: str, commits: int, first_key: int) -> dict[str, Any]:
    from deltalake import CommitProperties, DeltaTable, Transaction
    from deltalake.transaction import AddAction

    dt = DeltaTable(uri)
    commit_s: list[float] = []
    reload_s: list[float] = []
    for i in range(commits):
        now = int(time.time() * 1000)
        add = AddAction(
            f"bucket={i % BUCKETS}/new-{i:06d}.parquet",
            5_000,
            {"bucket": str(i % BUCKETS)},
            now,
            True,
            _stats(first_key + i * ROWS_PER_FILE),
        )
        props = CommitProperties(app_transactions=[Transaction(app_id="bench", version=i + 1)])
        t0 = time.perf_counter()
        dt.create_write_transaction(
            [add], mode="append", schema=dt.schema(), partition_by=["bucket"], commit_properties=props
        )
        t1 = time.perf_counter()
        dt.update_incremental()
        reload_s.append(time.perf_counter() - t1)
        commit_s.append(t1 - t0)
    total = [c + r for c, r in zip(commit_s, reload_s, strict=True)]

    def ms(xs: list[float], q: float | None = None) -> float:
        value = statistics.median(xs) if q is None else sorted(xs)[int(len(xs) * q)]
        return round(value * 1000, 2)

    return {
        "commit_ms": ms(commit_s),
        "commit_p90_ms": ms(commit_s, 0.9),
        "reload_ms": ms(reload_s),
        "reload_p90_ms": ms(reload_s, 0.9),
        "merge_overhead_ms": ms(total),
        "version": int(dt.version()),
    }


def measure_head(lake_root: Path, name: str, commits: int, first_key: int) -> dict[str, Any]:
    """``commits`` commits through a :class:`~pinpipe.lake.log_head.LogHead` on the table ``lake_root/name``."""
    from deltalake import DeltaTable

    from pinpipe.lake.data_files import WrittenFile
    from pinpipe.lake.log_head import LogHead
    from pinpipe.lake.store import Lake

    lake = Lake(f"file://{lake_root}")
    t0 = time.perf_counter()
    head = LogHead.start(lake, (name,), DeltaTable(lake.table_uri(name)))
    start_s = time.perf_counter() - t0
    assert head is not None
    took: list[float] = []
    for i in range(commits):
        added = WrittenFile(
            f"bucket={i % BUCKETS}/head-{i:06d}.parquet", 5_000, ROWS_PER_FILE, _stats(first_key + i * ROWS_PER_FILE)
        )
        t0 = time.perf_counter()
        head.follow()
        head.commit([added], [], {"bench-head": i + 1})
        took.append(time.perf_counter() - t0)
    head.wait()
    return {
        "head_ms": round(statistics.median(took) * 1000, 2),
        "head_p90_ms": round(sorted(took)[int(len(took) * 0.9)] * 1000, 2),
        "head_start_ms": round(start_s * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="0,300,3000,10000", help="data files of the table before the commits")
    parser.add_argument("--commits", type=int, default=40)
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.files.split(",")})
    base = Path(tempfile.mkdtemp(prefix="pinpipe-delta-commit-"))
    figures: dict[str, Any] = {}
    try:
        for files in sizes:
            t0 = time.perf_counter()
            uri = _table(base / f"t-{files}", files)
            build = time.perf_counter() - t0
            f = figures[str(files)] = measure(uri, args.commits, files * ROWS_PER_FILE)
            f.update(measure_head(base, f"t-{files}", args.commits, (files + args.commits) * ROWS_PER_FILE))
            f["build_s"] = round(build, 2)
            ratio = f["merge_overhead_ms"] / max(figures[str(sizes[0])]["merge_overhead_ms"], 1e-6)
            f["ratio"] = round(ratio, 2)
            print(
                f"{files:>6,} files: commit {f['commit_ms']:.1f} ms (p90 {f['commit_p90_ms']:.1f}), reload "
                f"{f['reload_ms']:.1f} ms (p90 {f['reload_p90_ms']:.1f}); per merge {f['merge_overhead_ms']:.1f} ms "
                f"= {ratio:.1f}x the {sizes[0]:,}-file table; through the log head {f['head_ms']:.1f} ms "
                f"(p90 {f['head_p90_ms']:.1f}; starting it {f['head_start_ms']:.0f} ms)",
                flush=True,
            )
            shutil.rmtree(base / f"t-{files}", ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"bench": "delta_commit", "commits": args.commits, "sizes": figures}))


if __name__ == "__main__":
    main()
