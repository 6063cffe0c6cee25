"""Counts a silver merge by delta-rs's MERGE does not give, read from silver before it (a silver table created
before the bucket column: :func:`pinpipe.lake.delta.merge_silver` sends it there), and :func:`written_before`.

The batch job (:func:`pinpipe.batch.job._write_chunk`) needs, per chunk, how many first records of the chunk's
``ind`` s change silver (its conflicts with silver) and how many winners change a row an earlier chunk of the run
wrote (collapsed, not updated). A bucketed table's merge says both itself
(:attr:`~pinpipe.lake.delta.MergeStats.changed_firsts`, :attr:`~pinpipe.lake.delta.MergeStats.updated_keys`);
for the others :func:`changes_before` reads them from silver first.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.clean import CleanResult
from pinpipe.engine import Engine
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.tables import Kind


def written_before(written: list[np.ndarray], keys: np.ndarray) -> np.ndarray:
    """Per key: is it in one of the sorted arrays ``written`` (binary search in each: the chunk's keys times the
    number of chunks so far, not the run's keys)."""
    keys = keys.astype(np.int64)
    found = np.zeros(keys.size, dtype=bool)
    for done in written:
        at = np.minimum(np.searchsorted(done, keys), done.size - 1)
        found |= done[at] == keys
    return found


def changes_before(
    lake: Lake, kind: Kind, cleaned: CleanResult, engine: Engine, written: list[np.ndarray]
) -> tuple[int, int, int]:
    """Before merging into a table without the bucket column: :func:`_changed_repeats`, and how many of the
    winners an earlier chunk of the run wrote differ from silver (the merge will update them)."""
    first_changed, last_changed = _changed_repeats(lake, kind, cleaned, engine)
    winners = cleaned.silver.column("ind").to_numpy()
    if not written or not winners.size:
        return first_changed, last_changed, 0
    seen = cleaned.silver.filter(pa.array(written_before(written, winners)))
    return first_changed, last_changed, delta.count_changed(lake, kind, seen, engine.duckdb())


def _changed_repeats(lake: Lake, kind: Kind, cleaned: CleanResult, engine: Engine) -> tuple[int, int]:
    """For the ``ind`` s with several records in the run: how many of their first records, and how many of their
    winners, differ from the row silver holds. Every other ``ind`` has one record, its first is its winner, and
    the MERGE's own count of updated rows already says whether it changed silver — so silver is read only for
    the repeated ``ind`` s (a few files), never for the whole run."""
    firsts = cleaned.firsts
    if firsts is None or firsts.num_rows == 0:
        return 0, 0
    winners = cleaned.silver.filter(pc.is_in(cleaned.silver.column("ind"), value_set=firsts.column("ind")))
    conn = engine.duckdb()
    return delta.count_changed(lake, kind, firsts, conn), delta.count_changed(lake, kind, winners, conn)
