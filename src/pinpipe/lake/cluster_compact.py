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

The work is in two steps, so that a stream worker's merges go on while its compaction reads and writes:
:func:`pack_files` plans on one snapshot's file list and writes the packed files, touching no table handle;
:func:`commit_packing`, holding the table, brings it to its latest version and makes one commit (``dataChange:
false``: the same rows in other files; gold's change feed skips it) that removes the packed files and adds the new
ones, for every group none of whose files a merge rewrote in between (such a group's packed file is left
unreferenced, and its files are packed on a later turn).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pinpipe.lake.data_files import (
    OPERATION,
    TableFile,
    WrittenFile,
    cast_to,
    catch_up,
    commit_files,
    open_data_file,
    table_files,
    table_prefix,
    write_file,
)
from pinpipe.lake.log_head import LogHead
from pinpipe.lake.store import Lake
from pinpipe.tables import SILVER_SCHEMAS, Kind


def packing_plan(files: Sequence[TableFile], small: int, target: int) -> list[list[TableFile]]:
    """The groups of files to pack into one file each (see the module docstring): per bucket, the files ordered by
    ``ind`` range fall into *components* (files whose ranges overlap, directly or through others); consecutive
    components made only of small files form a run, cut at component boundaries into groups of at most
    ``target`` bytes (a larger component is a group alone). A component that holds a bigger file too (new keys
    from two producers interleave, so a packed file's range can reach into the next batches' files) has its small
    files packed among themselves, never with the bigger one. Only groups of two or more files; files without
    statistics are never packed."""
    by_bucket: dict[int | None, list[TableFile]] = {}
    for f in files:
        if f.low is not None and f.high is not None:
            by_bucket.setdefault(f.bucket, []).append(f)
    groups: list[list[TableFile]] = []
    for mine in by_bucket.values():
        run: list[list[TableFile]] = []
        for component in _components(sorted(mine, key=lambda f: (f.low, f.high))):
            smalls = [f for f in component if f.size < small]
            if len(smalls) == len(component):
                run.append(component)
                continue
            groups += _bins(run, target)
            run = []
            # a component with a bigger file: its small files are packed among themselves (in key order), the
            # bigger file left alone — their ranges already overlap it, and the packed ones span no more
            groups += _bins([[f] for f in smalls], target)
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


@dataclass
class Packing:
    """A compaction's files, written but not committed: the groups it packs, the file each group became
    (``added[i]`` holds exactly the rows of ``groups[i]``) and the groups left out because a packed file changed
    before the commit (:meth:`intact`)."""

    groups: list[list[TableFile]]
    added: list[WrittenFile]
    dropped: int = 0

    def intact(self, current: set[str]) -> Packing:
        """The groups whose files are all still in the table (paths ``current``): a group one of whose files a
        merge rewrote (or another compaction packed) since the snapshot is dropped, the others are still exact —
        each packed file holds its own group's rows only."""
        keep = [i for i, group in enumerate(self.groups) if all(f.path in current for f in group)]
        groups = [self.groups[i] for i in keep]
        return Packing(groups, [self.added[i] for i in keep], self.dropped + len(self.groups) - len(keep))

    def metrics(self) -> dict[str, Any]:
        """delta-rs's metric names (``numFilesAdded``, ``numFilesRemoved``), plus the rows moved and the groups
        dropped."""
        removed = sum(len(g) for g in self.groups)
        rows = sum(f.num_records for f in self.added)
        return {
            "numFilesAdded": len(self.added),
            "numFilesRemoved": removed,
            "rows": rows,
            "groupsDropped": self.dropped,
        }


def pack_files(lake: Lake, kind: Kind, files: list[TableFile], target: int, small_share: int) -> Packing:
    """Plan the packing of ``silver/<kind>``'s ``files`` (one snapshot's, its ``delta.targetFileSize`` ``target``)
    and write the packed files. Reads data files only, never the table's log or handle: it runs without holding
    the table, while merges go on (see :func:`commit_packing`)."""
    prefix = table_prefix("silver", kind)
    schema = SILVER_SCHEMAS[kind]
    groups = packing_plan(files, target // small_share, target) if target else []
    added = []
    for group in groups:
        tables = []
        for f in group:
            tables.append(cast_to(open_data_file(lake, prefix + f.path).read(columns=schema.names), schema))
        added.append(write_file(lake, prefix, group[0].bucket, pa.concat_tables(tables).sort_by("ind")))
    return Packing(groups, added)


def commit_packing(lake: Lake, kind: Kind, dt: Any, packing: Packing, head: LogHead | None = None) -> Packing:
    """Commit ``packing`` on the open table ``dt`` (brought to its latest version first): one ``dataChange:
    false`` commit removing the packed files and adding the packed ones, for the groups whose files are all still
    in the latest version (:meth:`Packing.intact`; at a stream's pace merges rewrite a few small files while a
    compaction reads and writes, and a compaction that gave up whole on that never caught up). Returns what was
    committed, with the groups dropped; nothing is committed when every group was. Files other writers added since
    are no conflict: the packed rows are the same, and a file a merge added with keys inside a packed range only
    costs later merges a read. With ``head`` (a :class:`~pinpipe.lake.log_head.LogHead`) the head follows the
    log and writes the commit instead of ``dt``."""
    if not packing.groups:
        return packing
    if head is not None:
        head.follow()
    else:
        catch_up(dt)
    committed = packing.intact({f.path for f in (head.files() if head else table_files(dt))})
    if not committed.groups:
        return committed
    removed = [f for group in committed.groups for f in group]
    schema = SILVER_SCHEMAS[kind]
    metadata = {OPERATION: "OPTIMIZE"}
    if head is not None:
        head.commit(committed.added, removed, data_change=False, metadata=metadata)
        return committed
    commit_files(
        lake, ("silver", kind), schema, committed.added, removed, None, dt, data_change=False, metadata=metadata
    )
    dt.update_incremental()
    return committed
