"""A stream worker's options and what it reports per micro-batch (:class:`~pinpipe.stream.worker.StreamWorker`):
the outcomes, their metrics (:func:`record_batch`) and the profile its progress lines carry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pinpipe.log.base import TopicPartition
from pinpipe.tables import Kind
from pinpipe.telemetry.logs import get_logger

if TYPE_CHECKING:
    from pinpipe.telemetry.stream import StreamMetrics

log = get_logger("stream")


@dataclass(frozen=True)
class StreamOptions:
    """How a worker batches, when it commits log positions and when it stops by itself."""

    prefix: str
    max_batch: int = 5_000
    max_wait_ms: int = 200
    commit_interval_s: float = 1.0
    idle_stop_s: float | None = None
    """Stop after this many seconds without a record (``--until-idle``); None runs until stopped."""
    max_retries: int = 20
    summary_every_s: float = 10.0


@dataclass
class KindOutcome:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    duplicates: int = 0
    conflicts: int = 0
    clean_s: float = 0.0
    quarantine_s: float = 0.0
    merge_s: float = 0.0


@dataclass
class BatchOutcome:
    """What one committed micro-batch did. ``collect_s``: from its first record to its close; ``seconds``: from
    its close to its commits being confirmed (cleaning, then the kinds' commits, which overlap)."""

    records: int
    seconds: float
    clean_s: float = 0.0
    collect_s: float = 0.0
    kinds: dict[Kind, KindOutcome] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class BatchProfile:
    """Where the micro-batches since the worker's last progress line spent their time (means and maxima, in
    ms): collect (first record → close), clean (all kinds, on the engine's thread), quarantine and merge (the
    slowest kind's, on the pool's threads), batch (close → commits confirmed)."""

    batches: int = 0
    records: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)

    def add(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.records += outcome.records
        merge = max((k.merge_s for k in outcome.kinds.values()), default=0.0)
        quarantine = max((k.quarantine_s for k in outcome.kinds.values()), default=0.0)
        parts = {"collect": outcome.collect_s, "clean": outcome.clean_s, "quarantine": quarantine, "merge": merge}
        for name, value in {**parts, "batch": outcome.seconds}.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.maxima[name] = max(self.maxima.get(name, 0.0), value)

    def summary(self) -> dict[str, float]:
        if not self.batches:
            return {}
        out: dict[str, float] = {"batch_records_mean": round(self.records / self.batches, 1)}
        for name, total in self.sums.items():
            out[f"{name}_ms_mean"] = round(1000 * total / self.batches, 1)
            out[f"{name}_ms_max"] = round(1000 * self.maxima[name], 1)
        return out


def record_batch(m: StreamMetrics, totals: KindOutcome, outcome: BatchOutcome) -> None:
    """Count a committed micro-batch in the worker's metrics and running ``totals``; one debug line."""
    m.batches.inc()
    m.batch_seconds.observe(outcome.seconds)
    m.batch_records.observe(outcome.records)
    m.last_commit.set(time.time())
    t = totals
    for kind, k in outcome.kinds.items():
        m.records.labels(kind).inc(k.read)
        m.silver_rows.labels(kind, "insert").inc(k.inserted)
        m.silver_rows.labels(kind, "update").inc(k.updated)
        m.quarantined.labels(kind).inc(k.quarantined)
        m.duplicates.labels(kind).inc(k.duplicates)
        m.conflicts.labels(kind).inc(k.conflicts)
        m.merge_seconds.labels(kind).observe(k.merge_s)
        t.read += k.read
        t.inserted += k.inserted
        t.updated += k.updated
        t.quarantined += k.quarantined
        t.duplicates += k.duplicates
    log.debug(
        "batch committed",
        extra={
            "fields": {
                "records": outcome.records,
                "seconds": round(outcome.seconds, 3),
                "clean_s": round(outcome.clean_s, 3),
                **{f"{kind}_merge_s": round(k.merge_s, 3) for kind, k in outcome.kinds.items()},
            }
        },
    )
