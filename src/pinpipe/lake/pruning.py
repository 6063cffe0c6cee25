"""Which rows of a silver table a batch's keys can touch, spelled as a predicate delta-rs prunes files by.

Who calls what: :mod:`pinpipe.lake.delta` puts :func:`key_predicate` (alias ``t``) into every silver MERGE
predicate and passes it (no alias) as ``file_pruning_predicate`` when it reads the files a batch can touch. The
predicate is a superset test: true for every row of the batch's keys, false for most others, so a file whose
bucket and ``ind`` statistics rule it out is neither read nor rewritten. :func:`offset_predicate` does the
same for quarantine, keyed by ``(topic, partition, offset)``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable

import pyarrow as pa

from pinpipe.tables import SILVER_BUCKET, silver_bucket

MAX_RANGES = 256
"""At most this many ``ind`` ranges in a MERGE predicate (:func:`key_ranges`)."""


def key_ranges(inds: Iterable[int], most: int = MAX_RANGES) -> list[tuple[int, int]]:
    """The sorted distinct ``inds`` as at most ``most`` inclusive ranges, split at the widest gaps: 300 new keys
    above the table's largest and six old ones become seven tight ranges, not one that spans the table."""
    keys = sorted(set(inds))
    if not keys:
        return []
    gaps = sorted(range(1, len(keys)), key=lambda i: keys[i] - keys[i - 1], reverse=True)[: most - 1]
    cuts = [0, *sorted(i for i in gaps if keys[i] - keys[i - 1] > 1), len(keys)]
    return [(keys[a], keys[b - 1]) for a, b in itertools.pairwise(cuts)]


def key_predicate(inds: Iterable[int], buckets: int | None, alias: str = "") -> str:
    """A SQL predicate true for every silver row whose ``ind`` is in ``inds`` (and false for most others): their
    :func:`key_ranges`, each with the buckets its keys fall in (when the table is bucketed and they are not all
    of them). With ``alias`` ``"t"`` it is the target part of the MERGE predicate; without, a
    ``file_pruning_predicate``. delta-rs prunes by partition values and per-file min/max statistics only when the
    predicate spells them: it does not derive the source's range by itself (tech probe, 2026-12-01)."""
    keys = sorted(set(inds))
    col = f"{alias}." if alias else ""
    terms: list[str] = []
    for lo, hi in key_ranges(keys):
        term = f"{col}ind = {lo}" if lo == hi else f"{col}ind >= {lo} AND {col}ind <= {hi}"
        if buckets is not None:
            inside = keys[bisect.bisect_left(keys, lo) : bisect.bisect_right(keys, hi)]
            touched = sorted({silver_bucket(k, buckets) for k in inside})
            if len(touched) < buckets:
                term = f"{col}{SILVER_BUCKET} IN ({', '.join(map(str, touched))}) AND {term}"
        terms.append(f"({term})")
    return "(" + (" OR ".join(terms) or "false") + ")"


def offset_predicate(rows: pa.Table) -> str:
    """The quarantine rows a merge of ``rows`` can match: per topic-partition, its offset range."""
    spans: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in zip(
        *(rows.column(c).to_pylist() for c in ("topic", "partition", "offset")), strict=True
    ):
        spans.setdefault((topic, partition), []).append(offset)
    terms = []
    for (topic, partition), offsets in sorted(spans.items()):
        quoted = "'" + topic.replace("'", "''") + "'"
        terms.append(
            f"(t.topic = {quoted} AND t.`partition` = {partition} AND t.`offset` >= {min(offsets)} "
            f"AND t.`offset` <= {max(offsets)})"
        )
    return "(" + " OR ".join(terms) + ")"
