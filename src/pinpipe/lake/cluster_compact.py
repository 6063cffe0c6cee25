"""Small-file compaction of bucketed silver that keeps every file to a narrow ``ind`` range.

Who calls what: the stream worker's :class:`~pinpipe.stream.compaction.Compactor` calls
:func:`pinpipe.stream.compaction.compact_table`, which calls :func:`compact_bucketed` for a bucketed silver table
(delta-rs's ``optimize.compact`` for any other). A merge finds the files that may hold a key by their ``ind``
statistics (:mod:`pinpipe.lake.bucket_merge`), so a compacted file must not span keys that other files hold:
delta-rs's bin-packing joins any small files of a partition, and one small old file packed with new inserts spans
the whole range between them. Here, per bucket, the files are ordered by their lowest ``ind``; a **run** is a
maximal sequence of consecutive small files (under ``delta.targetFileSize / small_share``) with no other file's
range reaching into it (:func:`packing_plan`). Each run of two or more files is packed, in key order, into files
of up to ``delta.targetFileSize`` (rows sorted by ``ind``): the packed file's range lies inside the run's, so it
overlaps no file it did not replace. A packed file at the target size is not small any more and is never packed again (it
used to be packed into files of a quarter of the target, which the next pass packed again).

One commit (``dataChange: false``: the same rows in other files; gold's change feed skips it) removes the packed
files and adds the new ones, after :func:`~pinpipe.lake.data_files.check_unchanged` made sure no other writer
removed one of them since.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pinpipe.lake.data_files import (
    OPERATION,
    TableFile,
    cast_to,
    check_unchanged,
    commit_files,
    open_data_file,
    table_files,
    table_prefix,
    write_file,
)
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_SCHEMAS, Kind


def packing_plan(files: Sequence[TableFile], small: int, target: int) -> list[list[TableFile]]:
    """The groups of files to pack into one file each (see the module docstring): per bucket, the files ordered by
    ``ind`` range fall into *components* (files whose ranges overlap, directly or through others); consecutive
    components made only of small files form a run, cut at component boundaries into groups of at most
    ``target`` bytes (a larger component is a group alone). Only groups of two or more files; files without
    statistics are never packed."""
    by_bucket: dict[int | None, list[TableFile]] = {}
    for f in files:
        if f.low is not None and f.high is not None:
            by_bucket.setdefault(f.bucket, []).append(f)
    groups: list[list[TableFile]] = []
    for mine in by_bucket.values():
        run: list[list[TableFile]] = []
        for component in _components(sorted(mine, key=lambda f: (f.low, f.high))):
            if all(f.size < small for f in component):
                run.append(component)
            else:
                groups += _bins(run, target)
                run = []
        groups += _bins(run, target)
    return [g for g in groups if len(g) >= 2]


def _components(ordered: list[TableFile]) -> list[list[TableFile]]:
    """``ordered`` (by lowest ``ind``) cut where no earlier file's range reaches the next file's."""
    out: list[list[TableFile]] = []
    reach: int | None = None
    for f in ordered:
        if reach is None or int(f.low or 0) > reach:
            out.append([])
        out[-1].append(f)
        reach = int(f.high or 0) if reach is None else max(reach, int(f.high or 0))
    return out


def _bins(run: list[list[TableFile]], target: int) -> list[list[TableFile]]:
    out: list[list[TableFile]] = []
    current: list[TableFile] = []
    size = 0
    for component in run:
        extra = sum(f.size for f in component)
        if current and size + extra > target:
            out.append(current)
            current, size = [], 0
        current += component
        size += extra
    if current:
        out.append(current)
    return out


def compact_bucketed(lake: Lake, kind: Kind, dt: Any, small_share: int) -> dict[str, Any]:
    """Pack ``silver/<kind>``'s small files (see the module docstring) through the open table ``dt``; delta-rs's
    metric names (``numFilesAdded``, ``numFilesRemoved``), plus the rows moved."""
    parts = ("silver", kind)
    prefix = table_prefix(*parts)
    schema = SILVER_SCHEMAS[kind]
    target = int(dt.metadata().configuration.get("delta.targetFileSize") or 0)
    files = table_files(dt)
    groups = packing_plan(files, target // small_share if target else 0, target) if target else []
    added = []
    rows = 0
    for group in groups:
        tables = []
        for f in group:
            tables.append(cast_to(open_data_file(lake, prefix + f.path).read(columns=schema.names), schema))
        packed = pa.concat_tables(tables).sort_by("ind")
        rows += packed.num_rows
        added.append(write_file(lake, prefix, group[0].bucket, packed))
    removed = [f for group in groups for f in group]
    if groups:
        check_unchanged(dt, files, [f.path for f in removed], set(), {})
        commit_files(lake, parts, schema, added, removed, None, dt, data_change=False, metadata={OPERATION: "OPTIMIZE"})
        dt.update_incremental()
    return {"numFilesAdded": len(added), "numFilesRemoved": len(removed), "rows": rows}
