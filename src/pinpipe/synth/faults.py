"""Faults the real data lacks, and send lists: the records an emulator would send, with re-sends.

Callers: tests and benchmarks of the API, the batch and the stream jobs (feed :func:`send_list` in, compare the
result with :func:`pinpipe.synth.oracle.expected_output` of the same records), ``pinpipe source generate
--faults``. Faults apply to *records* (JSON on the wire or in JSONL files), never to the database, whose typed
columns could not hold them.

Fault kinds (each record is hit with probability ``faults``; the kind is drawn uniformly from its table's list):

===================  ======================================================================  ===============
fault                what it does                                                            tables
===================  ======================================================================  ===============
``missing_key``      removes ``index`` / ``ind``                                             pin, geo, user
``unknown_field``    adds ``"source_note": "unexpected"``                                    pin, geo, user
``bad_type``         ``downloaded: "yes"`` / ``latitude: "north"`` / ``age: "twenty"``       pin, geo, user
``follower_garbage`` follower_count ``12kk``, ``1,234``, ``lots``, ``k12`` or ``1.2.3k``      pin
``bad_timestamp``    ``not-a-date``, ``2020-13-45 25:61:00``, ``2020:08:28 03:52:47`` (a      geo, user
                     format seen in the wild) or a date without time ``2021-11-20``
``bad_coordinates``  latitude 123.4567 or longitude -200.5                                   geo
===================  ======================================================================  ===============
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from pinpipe.errors import ConfigError
from pinpipe.synth.generate import check_size, generate
from pinpipe.tables import KINDS, RAW_TABLES, Kind

Fault = Literal["missing_key", "unknown_field", "bad_type", "follower_garbage", "bad_timestamp", "bad_coordinates"]

FAULTS: dict[Kind, tuple[Fault, ...]] = {
    "pin": ("missing_key", "unknown_field", "bad_type", "follower_garbage"),
    "geo": ("missing_key", "unknown_field", "bad_type", "bad_timestamp", "bad_coordinates"),
    "user": ("missing_key", "unknown_field", "bad_type", "bad_timestamp"),
}
_BAD_TYPE: dict[Kind, tuple[str, str]] = {
    "pin": ("downloaded", "yes"),
    "geo": ("latitude", "north"),
    "user": ("age", "twenty"),
}
_GARBAGE_FOLLOWERS = ("12kk", "1,234", "lots", "k12", "1.2.3k")
_BAD_TIMESTAMPS = ("not-a-date", "2020-13-45 25:61:00", "2020:08:28 03:52:47", "2021-11-20")
_TIME_COLUMN: dict[Kind, str] = {"geo": "timestamp", "user": "date_joined"}


def check_rate(name: str, rate: float) -> None:
    """Raise ConfigError unless 0 <= rate <= 1."""
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{name} must be a fraction between 0 and 1, got {rate!r}", hint=f"e.g. --{name} 0.01")


def apply_fault(kind: Kind, record: dict[str, Any], fault: Fault, rng: np.random.Generator) -> dict[str, Any]:
    """A copy of ``record`` with ``fault`` applied (see the module table)."""
    if fault not in FAULTS[kind]:
        raise ConfigError(f"fault {fault!r} does not apply to {kind} records", hint=f"use one of {FAULTS[kind]}")
    out = dict(record)
    if fault == "missing_key":
        out.pop(RAW_TABLES[kind].key, None)
    elif fault == "unknown_field":
        out["source_note"] = "unexpected"
    elif fault == "bad_type":
        column, value = _BAD_TYPE[kind]
        out[column] = value
    elif fault == "follower_garbage":
        out["follower_count"] = _GARBAGE_FOLLOWERS[int(rng.integers(len(_GARBAGE_FOLLOWERS)))]
    elif fault == "bad_timestamp":
        out[_TIME_COLUMN[kind]] = _BAD_TIMESTAMPS[int(rng.integers(len(_BAD_TIMESTAMPS)))]
    else:  # bad_coordinates
        if rng.random() < 0.5:
            out["latitude"] = 123.4567
        else:
            out["longitude"] = -200.5
    return out


def inject_faults(kind: Kind, records: Sequence[Any], rate: float, seed: int | tuple[int, ...] = 0) -> list[Any]:
    """``records`` with a fault in each record with probability ``rate`` (deterministic in ``seed``, an int or
    a tuple of ints such as ``(seed, block number)``)."""
    check_rate("faults", rate)
    out = list(records)
    if rate == 0 or not out:
        return out
    rng = np.random.default_rng([*(seed if isinstance(seed, tuple) else (seed,)), KINDS.index(kind), 3])
    hit = np.flatnonzero(rng.random(len(out)) < rate).tolist()
    choices = rng.integers(0, len(FAULTS[kind]), len(hit)).tolist()
    for i, choice in zip(hit, choices, strict=True):
        out[i] = apply_fault(kind, out[i], FAULTS[kind][choice], rng)
    return out


@dataclass(frozen=True)
class SendList:
    """Posts in send order; each post maps kind → the record sent for it (all three share one key, as the
    original emulator sends the three rows at one offset together)."""

    posts: list[dict[Kind, Any]]

    def records(self, kind: Kind) -> list[Any]:
        """The records of one kind in send order (what lands on ``<prefix>.<kind>``)."""
        return [post[kind] for post in self.posts]

    def by_kind(self) -> dict[Kind, list[Any]]:
        """``{kind: records in send order}``: the argument :func:`pinpipe.synth.oracle.expected_output` takes."""
        return {kind: self.records(kind) for kind in KINDS}


def send_list(
    rows: int,
    seed: int = 0,
    *,
    resend_rate: float = 0.0,
    conflict_rate: float = 0.0,
    faults: float = 0.0,
    iso_rate: float = 0.0,
) -> SendList:
    """What an emulator sends for ``rows`` generated posts (each once, in a seeded random order), plus:

    - ``resend_rate`` × rows exact re-sends: a post sent again, later, unchanged (all three records);
    - ``conflict_rate`` × rows conflicting re-sends: a post sent again later with one record changed — pin
      ``title`` + `` (edited)``, geo ``timestamp`` + 1 day or user ``age`` + 1 — and the others unchanged, so
      the last one sent must win;
    - ``faults``: each record (after re-sends) faulted with this probability (see :func:`inject_faults`);
    - ``iso_rate``: share of records whose datetimes use the ISO ``T`` separator instead of a space.
    """
    for name, rate in (("resend-rate", resend_rate), ("conflict-rate", conflict_rate), ("iso-rate", iso_rate)):
        check_rate(name, rate)
    check_rate("faults", faults)
    check_size(rows, seed)
    base: list[dict[Kind, Any]] = [{} for _ in range(rows)]
    for block in generate(rows, seed):
        for kind in KINDS:
            for record in block.records(kind):
                base[record[RAW_TABLES[kind].key]][kind] = record
    rng = np.random.default_rng([seed, 0x5E4D, 4])
    order = rng.permutation(rows)
    posts: list[tuple[float, dict[Kind, Any]]] = [(float(i), base[p]) for i, p in enumerate(order.tolist())]
    n_resend, n_conflict = round(resend_rate * rows), round(conflict_rate * rows)
    for number in range(n_resend + n_conflict):
        first = int(rng.integers(rows))
        later = first + float(rng.uniform(0.0, rows - first))
        post = base[int(order[first])]
        if number >= n_resend:
            kind = KINDS[int(rng.integers(3))]
            post = {**post, kind: _changed(kind, post[kind])}
        posts.append((later, post))
    posts.sort(key=lambda item: item[0])
    sent = [dict(post) for _, post in posts]
    if iso_rate:
        for kind in ("geo", "user"):
            column = _TIME_COLUMN[kind]
            for i in np.flatnonzero(rng.random(len(sent)) < iso_rate).tolist():
                sent[i][kind] = {**sent[i][kind], column: sent[i][kind][column].replace(" ", "T")}
    for kind in KINDS:
        faulted = inject_faults(kind, [post[kind] for post in sent], faults, seed)
        for post, record in zip(sent, faulted, strict=True):
            post[kind] = record
    return SendList(sent)


def _changed(kind: Kind, record: dict[str, Any]) -> dict[str, Any]:
    out = copy.copy(record)
    if kind == "pin":
        out["title"] = f"{out['title']} (edited)"
    elif kind == "geo":
        moved = datetime.strptime(out["timestamp"], "%Y-%m-%d %H:%M:%S") + timedelta(days=1)
        out["timestamp"] = str(moved)
    else:
        out["age"] = out["age"] + 1
    return out
