"""Silver's upsert by ``ind`` into a bucketed table, done by pinpipe itself: copy-on-write of whole files with
pyarrow, committed with delta-rs's transaction API (or by a stream worker's log head, :mod:`pinpipe.lake.log_head`).

Who calls what: :func:`pinpipe.lake.delta.merge_silver` (the stream worker's micro-batches and every chunk of the
DuckDB batch) calls :func:`plan_merge` on the driver, and Spark executors run :func:`merge_bucket` per bucket
(:mod:`pinpipe.engine.spark_bucket_task`); both then commit the result's files with
:func:`pinpipe.lake.data_files.commit_files`. Why not delta-rs's MERGE: it rewrites every file holding a matched row
*together with the inserts* into new files whose ``ind`` range spans both, so after a few merges with updates of
old ``ind`` each file covers most of the key range, statistics prune nothing and every merge reads the table (a
10M-row stream fell minutes behind that way). Here, per bucket:

1. the files whose ``ind`` statistics can hold one of the bucket's keys (exact test: some key in ``[min, max]``)
   have their ``ind`` column read (on ``file://`` in place, elsewhere from the fetched object): only those holding
   a key are decoded further;
2. a key no file holds is an insert; a held one with other content (null-safe, NaN equal to NaN: Spark's ``<=>``,
   DuckDB's ``IS DISTINCT FROM``) an update; the rest are unchanged;
3. each file holding an updated row is rewritten **on its own** (its other rows kept, sorted by ``ind``), so it
   keeps its key range; the inserts are written sorted by ``ind`` as new files of at most ``rows_per_file`` rows,
   cut where the keys jump between sequences far apart (:func:`_runs`).

The files are complete in the store before the plan returns; until a commit names them, readers do not see them
(an attempt that then fails, a lost commit race say, leaves them unreferenced: Delta's ``VACUUM`` removes such
files, and the retry writes new ones).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.lake.data_files import TableFile, WrittenFile, cast_to, holding, open_data_file, write_file
from pinpipe.lake.store import Lake
from pinpipe.tables import Kind, silver_bucket

BYTES_PER_ROW: dict[Kind, int] = {"pin": 350, "geo": 26, "user": 26}
"""What a silver row takes in a Parquet file when the table holds none yet to measure (the sample's sizes)."""

MIN_ROWS_PER_FILE = 1_000
WORKERS = 4
"""Buckets merged at once on the driver (pyarrow's reads and writes release the GIL; on an object store the
fetches overlap)."""


@dataclass
class BucketMerge:
    """What merging one batch into one bucket (or, summed, into a table) wrote and decided."""

    added: list[WrittenFile] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Paths (relative to the table) of the files rewritten."""
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_firsts: int = 0
    files_read: int = 0
    """Files whose statistics could hold a key: fetched and their ``ind`` column read."""
    keys: dict[int, np.ndarray[Any, Any]] = field(default_factory=dict)
    """The merged keys, sorted, by bucket (what a concurrent writer's new files are checked against)."""
    updated_keys: list[np.ndarray[Any, Any]] = field(default_factory=list)
    """The keys of the rows it updated, one array per rewritten file."""

    def add(self, other: BucketMerge) -> None:
        self.added += other.added
        self.removed += other.removed
        self.updated_keys += other.updated_keys
        self.keys.update(other.keys)
        for name in ("inserted", "updated", "unchanged", "changed_firsts", "files_read"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def rows_per_file(target_bytes: int, kind: Kind, files: Sequence[TableFile]) -> int:
    """Rows per written file so that files come out about ``target_bytes`` (the table's ``delta.targetFileSize``),
    from the table's bytes per row, or :data:`BYTES_PER_ROW` when it holds nothing."""
    return rows_per_file_of(target_bytes, kind, sum(f.num_records for f in files), sum(f.size for f in files))


def rows_per_file_of(target_bytes: int, kind: Kind, rows: int, size: int) -> int:
    """:func:`rows_per_file` from a table's row and byte totals."""
    per_row = size / rows if rows else BYTES_PER_ROW[kind]
    return max(MIN_ROWS_PER_FILE, math.floor(target_bytes / max(per_row, 1.0)))


def plan_merge(
    lake: Lake,
    prefix: str,
    schema: pa.Schema,
    winners: pa.Table,
    buckets: int,
    files_of: Callable[[int], Sequence[TableFile]],
    rows_per_file: int,
    firsts: pa.Table | None = None,
) -> BucketMerge:
    """:func:`merge_bucket` for every bucket ``winners`` (one row per ``ind``) fall in, :data:`WORKERS` at a time,
    summed in bucket order: what :func:`pinpipe.lake.delta.merge_silver` commits. ``files_of(bucket)``: the table's
    files in a bucket (:func:`by_bucket`, or a log head's). ``firsts``: the first records of the ``ind`` s that came
    more than once (see :func:`merge_bucket`), none by default."""
    winners = cast_to(winners, schema)
    of = _buckets(winners, buckets)
    firsts = cast_to(firsts, schema) if firsts is not None and firsts.num_rows else schema.empty_table()
    firsts_of = _buckets(firsts, buckets)

    def one(bucket: int) -> BucketMerge:
        mine = winners.filter(pc.equal(of, bucket))
        first = firsts.filter(pc.equal(firsts_of, bucket)) if firsts.num_rows else firsts
        return merge_bucket(lake, prefix, schema, bucket, mine, first, files_of(bucket), rows_per_file)

    touched = sorted(set(of.to_pylist()))
    total = BucketMerge()
    if not touched:  # nothing to merge (a batch that only records progress)
        return total
    if len(touched) == 1:
        total.add(one(touched[0]))
        return total
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(touched)), thread_name_prefix="pinpipe-merge") as pool:
        for part in pool.map(one, touched):
            total.add(part)
    return total


def by_bucket(files: Sequence[TableFile]) -> Callable[[int], Sequence[TableFile]]:
    """``files`` grouped by bucket, as :func:`plan_merge` takes them."""
    grouped: dict[int, list[TableFile]] = {}
    for f in files:
        grouped.setdefault(int(f.bucket or 0), []).append(f)
    return lambda bucket: grouped.get(bucket, ())


def _buckets(rows: pa.Table, buckets: int) -> pa.Array:
    return pa.array([silver_bucket(i, buckets) for i in rows.column("ind").to_pylist()], pa.int32())


def merge_bucket(
    lake: Lake,
    prefix: str,
    schema: pa.Schema,
    bucket: int | None,
    winners: pa.Table,
    firsts: pa.Table,
    files: Sequence[TableFile],
    rows_per_file: int,
) -> BucketMerge:
    """Merge one bucket's ``winners`` (``schema`` rows, one per ``ind``) into its ``files`` (see the module
    docstring); ``firsts`` are the first records of the ``ind`` that came more than once in the run, compared with
    silver only to count conflicts. ``prefix`` is the table's key prefix in the lake; ``bucket`` None for a table
    without partition columns. Writes the new files; commits nothing. One existing file is held in memory at a
    time, and it is compared only with the winners inside its ``ind`` range."""
    winners = cast_to(winners, schema).sort_by("ind")
    keys = winners.column("ind").to_numpy(zero_copy_only=False)
    compared = _compared(winners, cast_to(firsts, schema)) if firsts.num_rows else winners
    compared_keys = compared.column("ind").to_numpy(zero_copy_only=False)
    out = BucketMerge(keys={} if bucket is None else {bucket: keys})
    matched = np.zeros(winners.num_rows, dtype=bool)
    for f in itertools.compress(files, holding(files, keys)):
        out.files_read += 1
        reader = open_data_file(lake, prefix + f.path)
        lo, hi = _span(keys, f)
        inds = reader.read(columns=["ind"]).column("ind")
        mine, held = _held(winners.slice(lo, hi - lo), inds)
        if not mine.num_rows:
            continue
        rows = cast_to(reader.read(columns=schema.names), schema)
        matched[lo:hi] |= held
        changed = mine.filter(differs(mine, _rows_of(rows, mine), schema))
        if compared is winners:  # every ind came once: its first record is its winner, compared just above
            out.changed_firsts += changed.num_rows
        else:
            c_lo, c_hi = _span(compared_keys, f)
            out.changed_firsts += _changed(compared.slice(c_lo, c_hi - c_lo), rows, schema)
        if changed.num_rows:
            out.updated += changed.num_rows
            out.updated_keys.append(changed.column("ind").to_numpy(zero_copy_only=False))
            kept = rows.filter(pc.invert(pc.is_in(rows.column("ind"), value_set=changed.column("ind"))))
            out.added.append(write_file(lake, prefix, bucket, pa.concat_tables([kept, changed]).sort_by("ind")))
            out.removed.append(f.path)
    new = winners.filter(pa.array(~matched))
    out.inserted = new.num_rows
    out.unchanged = winners.num_rows - out.inserted - out.updated
    for run in _runs(new):
        for start in range(0, run.num_rows, rows_per_file):
            out.added.append(write_file(lake, prefix, bucket, run.slice(start, rows_per_file)))
    return out


GAP_FACTOR = 64
"""Inserts are cut into separate files where the gap between two consecutive new keys exceeds this many times
their median gap (:func:`_runs`)."""


def _runs(new: pa.Table) -> list[pa.Table]:
    """``new`` (sorted by ``ind``) cut where consecutive keys jump by more than :data:`GAP_FACTOR` times the median
    step: keys from sequences far apart (two producers, or a few old keys among new ones) go to files of their own,
    whose narrow ranges hold no later key of another sequence. Keys spread evenly (a backlog's random ones) have no
    such jump and stay in one run."""
    if new.num_rows < 3:
        return [new] if new.num_rows else []
    keys = new.column("ind").to_numpy(zero_copy_only=False)
    steps = np.diff(keys)
    cuts = np.flatnonzero(steps > GAP_FACTOR * max(float(np.median(steps)), 1.0)) + 1
    bounds = [0, *cuts.tolist(), new.num_rows]
    return [new.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def _span(keys: np.ndarray[Any, Any], f: TableFile) -> tuple[int, int]:
    """The slice of the sorted ``keys`` inside ``f``'s ``ind`` range (all of them when it has no statistics)."""
    if f.low is None or f.high is None:
        return 0, len(keys)
    return int(np.searchsorted(keys, f.low, "left")), int(np.searchsorted(keys, f.high, "right"))


def _same(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array, kind: pa.DataType) -> pa.Array:
    """Null-safe equality of two columns, NaN equal to NaN."""
    if pa.types.is_nested(kind):
        same = [_equal(x, y) for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)]
        return pa.array(same, pa.bool_())
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    out = pc.or_(pc.fill_null(pc.equal(a, b), False), both_null)
    if pa.types.is_floating(kind):
        out = pc.or_(out, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return out


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_equal(p, q) for p, q in zip(x, y, strict=True))
    return bool(x == y)


def differs(source: pa.Table, target: pa.Table, schema: pa.Schema) -> pa.Array:
    """Per row: some column other than ``ind`` differs between ``source`` and ``target`` (aligned rows)."""
    out = pa.array([False] * source.num_rows, pa.bool_())
    for f in schema:
        if f.name != "ind":
            out = pc.or_(out, pc.invert(_same(source.column(f.name), target.column(f.name), f.type)))
    return out


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _compared(winners: pa.Table, firsts: pa.Table) -> pa.Table:
    """What conflicts are counted on, sorted by ``ind``: each ``ind``'s first record in the run (its winner when
    it came once)."""
    alone = winners.filter(pc.invert(pc.is_in(winners.column("ind"), value_set=firsts.column("ind"))))
    return pa.concat_tables([alone, firsts]).sort_by("ind")


def _held(candidates: pa.Table, inds: pa.ChunkedArray | pa.Array) -> tuple[pa.Table, np.ndarray[Any, Any]]:
    """The ``candidates`` whose ``ind`` is one of ``inds`` (a file's), in order, and per candidate whether it is.
    Only those are compared with the file's rows: a file's range holds many new keys for each old one when keys
    arrive out of order (a backlog's chunks), and aligning every candidate with a (null) row of the file cost as
    much as reading the file."""
    held = pc.is_in(candidates.column("ind"), value_set=inds).to_numpy(zero_copy_only=False)
    return candidates.filter(pa.array(held)), held


def _rows_of(rows: pa.Table, held: pa.Table) -> pa.Table:
    """The rows of ``rows`` with the ``ind`` s of ``held`` (each held there), aligned with ``held``."""
    return rows.take(pc.index_in(held.column("ind"), value_set=rows.column("ind")))


def _changed(compared: pa.Table, rows: pa.Table, schema: pa.Schema) -> int:
    """How many of ``compared`` have an ``ind`` that ``rows`` hold with other content."""
    mine, _ = _held(compared, rows.column("ind"))
    return _count(differs(mine, _rows_of(rows, mine), schema)) if mine.num_rows else 0
