"""What :mod:`pinpipe.checks.accounting` reports: per-topic and per-kind counts through the stages, and the
findings (a broken invariant each) that make a report fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from pinpipe.errors import AccountingError

Stage = Literal["api", "log", "sink", "batch", "stream"]
Problem = Literal["lost", "doubled", "behind", "unrecorded", "skipped"]
STAGES: tuple[Stage, ...] = ("api", "log", "sink", "batch", "stream")


@dataclass(frozen=True)
class Finding:
    """One broken invariant: which stage, for which topic or kind, what happened to how many records."""

    stage: Stage
    subject: str
    problem: Problem
    records: int
    message: str


Adder = Callable[[Finding], None]


@dataclass
class TopicRow:
    """Counts of one topic through the stages (None: that stage was not looked at)."""

    topic: str
    kind: str
    sent: int | None = None
    acked: int | None = None
    rejected: int | None = None
    unresolved: int | None = None
    in_log: int | None = None
    skipped: int | None = None
    """Records skipped as corrupt by ``pinpipe log repair`` (accounted for, not lost)."""
    retired: int | None = None
    """Records the embedded log's retention deleted (counted in its retired manifests: accounted for, not lost)."""
    landed: int | None = None
    """Landed lines: those present in the lake plus those landing expiry deleted (``expired``)."""
    expired: int | None = None
    """Landed lines landing expiry deleted after the batch committed them (counted in its manifests)."""
    not_landed: int | None = None
    batch_done: int | None = None


@dataclass
class KindRow:
    """Counts of one kind: the batch runs (summed) and what the tables hold."""

    kind: str
    read: int | None = None
    inserted: int | None = None
    updated: int | None = None
    collapsed: int | None = None
    quarantined: int | None = None
    silver_rows: int | None = None
    valid_inds: int | None = None
    quarantine_rows: int | None = None


@dataclass
class AccountingReport:
    topics: list[TopicRow]
    kinds: list[KindRow]
    findings: list[Finding] = field(default_factory=list)

    def failures(self, allow_lag: bool = False) -> list[Finding]:
        kept = [f for f in self.findings if f.problem != "skipped" and not (allow_lag and f.problem == "behind")]
        return sorted(kept, key=lambda f: STAGES.index(f.stage))

    def check(self, allow_lag: bool = False) -> None:
        """Raise AccountingError naming the first failing stage (and listing every failure) if any."""
        failing = self.failures(allow_lag)
        if failing:
            first = failing[0]
            raise AccountingError(
                "; ".join(f.message for f in failing),
                hint=f"first at stage '{first.stage}'; `pinpipe accounting --json` shows every stage's counts",
                stage=first.stage,
                subject=first.subject,
            )

    def as_dict(self, allow_lag: bool = False) -> dict[str, object]:
        return {
            "balanced": not self.failures(allow_lag),
            "topics": [asdict(t) for t in self.topics],
            "kinds": [asdict(k) for k in self.kinds],
            "findings": [asdict(f) for f in self.findings],
        }
