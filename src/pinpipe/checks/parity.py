"""Batch/stream parity: do two lakes hold the same silver tables and the same quarantined records?

Who calls what: ``pinpipe parity --lake A --lake B`` (:mod:`pinpipe.cli.parity_cmd`) and the integration tests
call :func:`compare_lakes`; the report says per table how many rows each side has and shows the first
differences.

- **silver/<kind>** is keyed by ``ind``: a row only in A, only in B, or with different values is a difference.
  Values are compared exactly (doubles and timestamps included) after sorting both sides by ``ind``.
- **quarantine/<kind>** is compared as a multiset of ``(reason, raw record)``: the batch path records the landed
  object key as the record's source and the stream path records ``log``, so where a record came from is not part
  of its identity, but a bad record sent twice must be quarantined twice on both sides.

A lake that holds neither landed objects nor tables is :class:`~pinpipe.errors.NotFoundError`: two empty (or
mistyped) lakes are not "identical", there is no evidence to compare.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

import pinpipe.lake.delta as delta
from pinpipe.errors import NotFoundError
from pinpipe.lake.store import LAKE_CONTENT, Lake
from pinpipe.tables import KINDS, Kind

Row = dict[str, Any]


@dataclass(frozen=True)
class Difference:
    """One differing key with the row (or count) on each side; None when that side lacks it."""

    key: Any
    a: Any
    b: Any


@dataclass(frozen=True)
class TableParity:
    """The comparison of one table (``silver/pin``, ``quarantine/geo``, ...) between lakes A and B."""

    table: str
    rows_a: int
    rows_b: int
    differing: int
    examples: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.differing == 0


@dataclass(frozen=True)
class ParityReport:
    tables: list[TableParity]

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)


def _sorted_by_ind(table: pa.Table) -> pa.Table:
    return table.sort_by([("ind", "ascending")]).combine_chunks()


def compare_silver(kind: Kind, a: pa.Table | None, b: pa.Table | None, limit: int = 10) -> TableParity:
    """Compare two silver tables of ``kind`` by ``ind``."""
    name = f"silver/{kind}"
    rows_a = a.num_rows if a is not None else 0
    rows_b = b.num_rows if b is not None else 0
    if a is not None and b is not None and _sorted_by_ind(a).equals(_sorted_by_ind(b)):
        return TableParity(name, rows_a, rows_b, 0)  # fast path; otherwise compare row by row
    left = _by_ind(a)
    right = _by_ind(b)
    differing = 0
    examples: list[Difference] = []
    for ind in sorted(left.keys() | right.keys()):
        ra, rb = left.get(ind), right.get(ind)
        if ra != rb:
            differing += 1
            if len(examples) < limit:
                examples.append(Difference(ind, ra, rb))
    return TableParity(name, rows_a, rows_b, differing, examples)


def _by_ind(table: pa.Table | None) -> dict[Any, Row]:
    if table is None:
        return {}
    return {row["ind"]: row for row in table.to_pylist()}


def compare_quarantine(kind: Kind, a: pa.Table | None, b: pa.Table | None, limit: int = 10) -> TableParity:
    """Compare two quarantine tables of ``kind`` as multisets of (reason, raw)."""
    name = f"quarantine/{kind}"
    left, right = _reasons(a), _reasons(b)
    differing = 0
    examples: list[Difference] = []
    for key in sorted(left.keys() | right.keys()):
        ca, cb = left.get(key, 0), right.get(key, 0)
        if ca != cb:
            differing += abs(ca - cb)
            if len(examples) < limit:
                examples.append(Difference({"reason": key[0], "raw": key[1]}, ca, cb))
    rows_a = a.num_rows if a is not None else 0
    rows_b = b.num_rows if b is not None else 0
    return TableParity(name, rows_a, rows_b, differing, examples)


def _reasons(table: pa.Table | None) -> Counter[tuple[str, str]]:
    if table is None or table.num_rows == 0:
        return Counter()
    reasons = table.column("reason").to_pylist()
    raws = table.column("raw").to_pylist()
    return Counter(zip(reasons, raws, strict=True))


def compare_lakes(a: Lake, b: Lake, limit: int = 10, kinds: tuple[Kind, ...] = KINDS) -> ParityReport:
    """Silver and quarantine parity of every kind between lakes ``a`` and ``b`` (each must hold a table)."""
    for name, lake in (("A", a), ("B", b)):
        if not lake.holds_objects(LAKE_CONTENT):
            raise NotFoundError(
                f"lake {name} ({lake.url}) holds neither landed objects nor tables: there is nothing to compare",
                hint="check the --lake values; run `pinpipe stream` or `pinpipe batch` into each lake first",
                lake=lake.url,
            )
    tables: list[TableParity] = []
    for kind in kinds:
        tables.append(
            compare_silver(kind, delta.read_table(a, "silver", kind), delta.read_table(b, "silver", kind), limit)
        )
    for kind in kinds:
        tables.append(
            compare_quarantine(
                kind, delta.read_table(a, "quarantine", kind), delta.read_table(b, "quarantine", kind), limit
            )
        )
    return ParityReport(tables)
