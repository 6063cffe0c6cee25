"""``<lake>/_meta/runs``: the batch job's record of every run, one row per kind — defined once here.

Who calls what: :func:`pinpipe.batch.job.run_batch` appends a run's rows (:data:`RUNS_SCHEMA`); the quality gate
(:mod:`pinpipe.checks.quality`), accounting, status and the report read them back. :class:`Balance` is the one
definition of a kind's accounting identity, ``read = written + collapsed + quarantined``, shared by the run being
counted (:class:`~pinpipe.batch.job.KindRun`) and the row read back (:class:`~pinpipe.checks.quality.KindVerdict`).
"""

from __future__ import annotations

import pyarrow as pa

from pinpipe.tables import TIMESTAMP

RUNS_TABLE = ("_meta", "runs")
"""Where the runs table lives under the lake."""
COUNT_COLUMNS = ("objects", "read", "inserted", "updated", "collapsed", "conflicts", "quarantined")

RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("started_at", TIMESTAMP, nullable=False),
        pa.field("finished_at", TIMESTAMP, nullable=False),
        pa.field("interval_start", TIMESTAMP),
        pa.field("interval_end", TIMESTAMP),
        *(pa.field(name, pa.int64(), nullable=False) for name in COUNT_COLUMNS),
        pa.field("notes", pa.string(), nullable=False),
    ]
)
"""One row per kind per run (``path`` = ``"batch"``); ``notes`` is a JSON object of data-quality note counts."""


class Balance:
    """A kind's counts in one run and the identity they must keep (a mixin of two dataclasses)."""

    @property
    def counts(self) -> tuple[int, int, int, int, int]:
        """``(read, inserted, updated, collapsed, quarantined)``; the dataclasses using the mixin define them."""
        raise NotImplementedError

    @property
    def written(self) -> int:
        _, inserted, updated, _, _ = self.counts
        return inserted + updated

    @property
    def balanced(self) -> bool:
        read, _, _, collapsed, quarantined = self.counts
        return read == self.written + collapsed + quarantined

    @property
    def share(self) -> float:
        """Quarantined records as a share of the records read (0 when nothing was read)."""
        read, _, _, _, quarantined = self.counts
        return quarantined / read if read else 0.0
