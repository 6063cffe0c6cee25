"""Which small silver files compaction packs together: only runs adjacent in ``ind`` order, so a packed file never
spans keys another file holds."""

from __future__ import annotations

from typing import Any

from pinpipe.lake.cluster_compact import packing_plan
from pinpipe.lake.data_files import TableFile

SMALL, TARGET = 100, 400


def _f(name: str, low: int, high: int, size: int, bucket: int = 0) -> TableFile:
    return TableFile(name, size, 10, low, high, bucket)


def _names(groups: list[list[TableFile]]) -> list[list[str]]:
    return [[f.path for f in g] for g in groups]


def test_small_files_between_big_ones_are_packed_per_gap_never_across_a_big_file() -> None:
    files = [
        _f("big-a", 0, 100, 500),
        _f("b", 101, 150, 50),
        _f("c", 151, 200, 50),
        _f("big-d", 201, 300, 500),
        _f("e", 301, 310, 30),
        _f("f", 311, 320, 30),
        _f("g", 321, 330, 30),
    ]
    assert _names(packing_plan(files, SMALL, TARGET)) == [["b", "c"], ["e", "f", "g"]]


def test_a_small_file_inside_a_big_files_range_is_left_alone() -> None:
    files = [_f("big", 0, 1_000, 500), _f("inside", 10, 20, 10), _f("after-1", 1_001, 1_010, 10)]
    files.append(_f("after-2", 1_011, 1_020, 10))
    assert _names(packing_plan(files, SMALL, TARGET)) == [["after-1", "after-2"]]


def test_small_files_chained_to_a_bigger_file_by_overlaps_are_packed_among_themselves() -> None:
    """Two producers' new keys interleave: a packed file's range reaches into later batches' small files, which
    chain to it by overlaps (one component). They are packed together, the bigger file left as it is."""
    files = [_f("packed", 0, 105, 150), _f("s1", 100, 120, 20), _f("s2", 110, 130, 20), _f("s3", 125, 140, 20)]
    files.append(_f("big-later", 200, 300, 500))
    assert _names(packing_plan(files, SMALL, TARGET)) == [["s1", "s2", "s3"]]


def test_runs_are_cut_at_the_target_size_and_buckets_stay_apart() -> None:
    files = [_f(f"p{i}", 10 * i, 10 * i + 9, 90) for i in range(9)]
    files += [_f("other-bucket", 35, 36, 10, bucket=1), _f("other-bucket-2", 37, 38, 10, bucket=1)]
    groups = _names(packing_plan(files, SMALL, TARGET))
    assert groups == [["p0", "p1", "p2", "p3"], ["p4", "p5", "p6", "p7"], ["other-bucket", "other-bucket-2"]]


def test_overlapping_small_files_are_one_component_and_files_without_statistics_are_never_packed() -> None:
    files = [_f("x", 0, 50, 20), _f("y", 40, 60, 20), _f("z", 61, 70, 20), TableFile("nostats", 5, 1, None, None, 0)]
    assert _names(packing_plan(files, SMALL, TARGET)) == [["x", "y", "z"]]


def test_inserts_from_sequences_far_apart_go_to_files_of_their_own() -> None:
    """Two producers' new keys in one batch (dense runs far apart), and a stray old key: cut at the jumps; keys
    spread evenly stay together."""
    import pyarrow as pa

    from pinpipe.lake.bucket_merge import _runs

    def runs(keys: list[int]) -> list[list[int]]:
        table = pa.table({"ind": pa.array(sorted(keys), pa.int64())})
        return [r.column("ind").to_pylist() for r in _runs(table)]

    a, b = list(range(1_000, 1_100, 3)), list(range(900_000, 900_100, 3))
    assert runs(a + b) == [a, b]
    assert runs([*a, 50_000_000]) == [a, [50_000_000]]
    spread = list(range(0, 10_000_000, 9_973))
    assert runs(spread) == [spread]
    assert runs([]) == [] and runs([5]) == [[5]]


def test_compaction_commits_say_optimize_and_merges_say_their_rows(tmp_path: Any) -> None:
    """pinpipe's commits through delta-rs's transaction API carry what delta-rs's own operations would: a merge its
    rows (the report's history splits silver by writer from them), a compaction ``OPTIMIZE`` (status's freshness
    does not count it as a write)."""
    import time
    from datetime import UTC, datetime

    import pyarrow as pa
    from deltalake import DeltaTable

    from pinpipe.checks.status import _silver
    from pinpipe.lake import delta
    from pinpipe.lake.store import Lake
    from pinpipe.report.history import parse_commit
    from pinpipe.stream.compaction import compact_table
    from pinpipe.synth.generate import generate_records
    from pinpipe.synth.oracle import clean_record
    from pinpipe.tables import SILVER_SCHEMAS

    lake = Lake(f"file://{tmp_path / 'lake'}")
    rows = [row for r in generate_records(200, 1)["geo"] if (row := clean_record("geo", r).row) is not None]
    for i in range(0, 200, 50):
        table = pa.Table.from_pylist(rows[i : i + 50], schema=SILVER_SCHEMAS["geo"])
        delta.merge_silver(lake, "geo", table, app_txns={"pinpipe-stream:t:0": i + 50})
    time.sleep(0.01)
    result = compact_table(lake, "silver", "geo")
    assert result is not None and result["numFilesRemoved"] > 0
    log_dir = tmp_path / "lake" / "silver" / "geo" / "_delta_log"
    commits = [parse_commit(int(p.stem), p.read_bytes()) for p in sorted(log_dir.glob("*.json"))]
    kinds = [(c.writer, c.inserted) for c in commits if c is not None and c.operation != "CREATE TABLE"]
    packed = len(kinds) - 4  # one compaction commit per bucket it packed
    assert packed >= 1 and kinds == [("stream", 50)] * 4 + [("compaction", 0)] * packed
    history = DeltaTable(lake.table_uri("silver", "geo")).history()
    last_write = max(int(h["timestamp"]) for h in history if h.get("pinpipe.rows_inserted"))
    status = _silver(lake, "geo", datetime.now(UTC))
    assert status.last_write is not None
    assert int(status.last_write.timestamp() * 1000) == last_write
