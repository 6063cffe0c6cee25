"""The data-quality gate: did a batch run balance, and did it quarantine no more than a given share?

Who calls what: ``pinpipe quality`` (the Airflow DAG's ``quality`` task runs it right after ``batch``) and
``pinpipe demo`` call :func:`check_run`, then :func:`enforce`. The facts come from ``<lake>/_meta/runs``, where
every batch run records one row per kind (:data:`pinpipe.lake.runs.RUNS_SCHEMA`); the gate reads nothing else, so
it can run anywhere the lake is reachable (on Databricks too) and judges exactly the run the scheduler asked for.

Which run: the one named by ``run_id``; else the latest (by ``finished_at``) whose recorded data interval equals
the one given — the DAG passes its own, so a retried batch task is judged by its last attempt; else the latest
run of all. Per kind the run must balance (``read = inserted + updated + collapsed + quarantined``, else
:class:`~pinpipe.errors.AccountingError`) and its quarantine share ``quarantined / read`` must not exceed the
threshold (else :class:`~pinpipe.errors.InvalidInputError`: the input is dirtier than agreed). A run that read
no record fails (InvalidInputError) unless ``allow_empty``: a typo'd location or a sink that landed nothing must
not read as a clean day. A lake without the run asked for is :class:`~pinpipe.errors.NotFoundError` (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pinpipe.errors import AccountingError, ConfigError, InvalidInputError, NotFoundError
from pinpipe.lake import delta
from pinpipe.lake.runs import RUNS_TABLE, Balance
from pinpipe.lake.store import Lake


@dataclass(frozen=True)
class KindVerdict(Balance):
    """One kind of one run as ``_meta/runs`` recorded it: its accounting and its quarantine share."""

    kind: str
    read: int
    inserted: int
    updated: int
    collapsed: int
    quarantined: int
    conflicts: int

    @property
    def counts(self) -> tuple[int, int, int, int, int]:
        return self.read, self.inserted, self.updated, self.collapsed, self.quarantined


@dataclass(frozen=True)
class QualityVerdict:
    """The gate's judgement of one run. ``ok`` is True when every kind balances and is under the threshold."""

    run_id: str
    path: str
    finished_at: datetime
    interval_start: datetime | None
    interval_end: datetime | None
    kinds: tuple[KindVerdict, ...]
    max_quarantine_share: float
    allow_empty: bool = False
    """Pass a run that read no record (``--allow-empty``)."""

    @property
    def unbalanced(self) -> list[KindVerdict]:
        return [k for k in self.kinds if not k.balanced]

    @property
    def too_dirty(self) -> list[KindVerdict]:
        return [k for k in self.kinds if k.share > self.max_quarantine_share]

    @property
    def empty(self) -> bool:
        """True when the run read no record at all."""
        return sum(k.read for k in self.kinds) == 0

    @property
    def ok(self) -> bool:
        return not self.unbalanced and not self.too_dirty and (self.allow_empty or not self.empty)

    def lines(self) -> list[str]:
        """Human lines: one per kind, then the verdict."""
        interval = (
            f"{self.interval_start.isoformat()} → {self.interval_end.isoformat()}"
            if self.interval_start and self.interval_end
            else "no interval"
        )
        out = [f"run {self.run_id} ({self.path}, {interval}, finished {self.finished_at.isoformat()})"]
        for k in self.kinds:
            balance = "balanced" if k.balanced else "NOT BALANCED"
            share = "ok" if k.share <= self.max_quarantine_share else "TOO HIGH"
            out.append(
                f"  {k.kind:<5} read {k.read} = written {k.written} + collapsed {k.collapsed} + quarantined "
                f"{k.quarantined}: {balance}; quarantined {k.share:.2%} (max {self.max_quarantine_share:.2%}): {share}"
            )
        if self.empty:
            out.append("  the run read no record" + (" (allowed)" if self.allow_empty else ": FAILED"))
        out.append("quality gate: " + ("passed" if self.ok else "FAILED"))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "path": self.path,
            "finished_at": self.finished_at.isoformat(),
            "interval_start": self.interval_start.isoformat() if self.interval_start else None,
            "interval_end": self.interval_end.isoformat() if self.interval_end else None,
            "max_quarantine_share": self.max_quarantine_share,
            "allow_empty": self.allow_empty,
            "empty": self.empty,
            "ok": self.ok,
            "kinds": [
                {
                    "kind": k.kind,
                    "read": k.read,
                    "written": k.written,
                    "collapsed": k.collapsed,
                    "quarantined": k.quarantined,
                    "conflicts": k.conflicts,
                    "balanced": k.balanced,
                    "quarantine_share": k.share,
                }
                for k in self.kinds
            ],
        }


def check_run(
    lake: Lake,
    max_quarantine_share: float,
    *,
    run_id: str | None = None,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    path: str = "batch",
    allow_empty: bool = False,
) -> QualityVerdict:
    """Judge one recorded run (see the module docstring for which). Raises
    :class:`~pinpipe.errors.NotFoundError` when there is no such run; never raises for a bad verdict."""
    if not 0.0 <= max_quarantine_share <= 1.0:
        raise ConfigError(
            f"the maximum quarantine share must be between 0 and 1, not {max_quarantine_share}",
            hint="e.g. --max-quarantine-share 0.05 for 5 %",
        )
    table = delta.read_table(lake, *RUNS_TABLE)
    rows = [r for r in (table.to_pylist() if table is not None else []) if r["path"] == path]
    if not rows:
        raise NotFoundError(
            f"{lake.url} has no {path} run recorded in _meta/runs",
            hint="run `pinpipe batch` first (it records each run there)",
        )
    if run_id is not None:
        chosen = [r for r in rows if r["run_id"] == run_id]
        if not chosen:
            raise NotFoundError(f"no {path} run {run_id!r} in {lake.url}", hint="check the run id")
    else:
        if interval_start is not None or interval_end is not None:
            rows = [r for r in rows if r["interval_start"] == interval_start and r["interval_end"] == interval_end]
            if not rows:
                raise NotFoundError(
                    f"no {path} run recorded for the interval {interval_start} → {interval_end} in {lake.url}",
                    hint="run `pinpipe batch` with the same --interval-start/--interval-end first",
                )
        latest = max(rows, key=lambda r: (r["finished_at"], r["started_at"]))
        chosen = [r for r in rows if r["run_id"] == latest["run_id"]]
    first = chosen[0]
    kinds = tuple(
        KindVerdict(
            str(r["kind"]),
            int(r["read"]),
            int(r["inserted"]),
            int(r["updated"]),
            int(r["collapsed"]),
            int(r["quarantined"]),
            int(r["conflicts"]),
        )
        for r in sorted(chosen, key=lambda r: str(r["kind"]))
    )
    return QualityVerdict(
        run_id=str(first["run_id"]),
        path=path,
        finished_at=first["finished_at"],
        interval_start=first["interval_start"],
        interval_end=first["interval_end"],
        kinds=kinds,
        max_quarantine_share=max_quarantine_share,
        allow_empty=allow_empty,
    )


def enforce(verdict: QualityVerdict) -> None:
    """Raise if the verdict failed: :class:`AccountingError` first (lost or doubled records), then
    :class:`InvalidInputError` (too much quarantined, or nothing read without ``allow_empty``)."""
    if verdict.unbalanced:
        detail = "; ".join(
            f"{k.kind}: read {k.read} ≠ written {k.written} + collapsed {k.collapsed} + quarantined {k.quarantined}"
            for k in verdict.unbalanced
        )
        raise AccountingError(
            f"run {verdict.run_id} does not balance — {detail}",
            hint="records were lost or doubled; keep the lake as it is and inspect _meta/runs and the landing",
            run_id=verdict.run_id,
        )
    if verdict.too_dirty:
        detail = "; ".join(f"{k.kind}: {k.quarantined}/{k.read} = {k.share:.2%}" for k in verdict.too_dirty)
        raise InvalidInputError(
            f"run {verdict.run_id} quarantined more than {verdict.max_quarantine_share:.2%} of its records — {detail}",
            hint="inspect <lake>/quarantine/<kind> (the reason column says why), or raise --max-quarantine-share",
            run_id=verdict.run_id,
        )
    if verdict.empty and not verdict.allow_empty:
        raise InvalidInputError(
            f"run {verdict.run_id} read no record",
            hint="check --lake and that the sink landed records for this interval; pass --allow-empty when an "
            "empty run is expected",
            run_id=verdict.run_id,
        )
