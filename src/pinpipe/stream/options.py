"""A stream worker's options and what it reports per micro-batch (:class:`~pinpipe.stream.worker.StreamWorker`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pinpipe.log.base import TopicPartition
from pinpipe.tables import Kind


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
    merge_s: float = 0.0


@dataclass
class BatchOutcome:
    """What one committed micro-batch did."""

    records: int
    seconds: float
    clean_s: float = 0.0
    kinds: dict[Kind, KindOutcome] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
