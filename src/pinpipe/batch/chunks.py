"""Cutting one kind's pending landed records into bounded chunks, in the order the latest-record rule compares.

Called by :func:`pinpipe.batch.job._run_kind`, once per attempt at a kind, with the kind's pending objects
(:func:`pinpipe.batch.job.pending_objects`); the job cleans and commits each chunk before asking for the next,
so a run holds at most about ``chunk_records`` records (plus one landed object per topic-partition being read)
whatever its backlog.

The winner of an ``ind`` is its last good record in ``(partition, offset, topic)`` order
(:mod:`pinpipe.clean.rules`). Chunks are cut in exactly that order: partitions ascending, and within a partition
the records of every topic merged by offset; a cut falls between two offsets, never between the records of two
topics at the same offset. Every record of chunk ``k`` therefore precedes every record of chunk ``k + 1``, and
merging the chunks' winners one after the other leaves silver as one merge of the whole run would. Each chunk
carries, per topic-partition it holds records of, the offset after its last record there (its application
transactions): a crash after chunk ``k``'s commit resumes exactly at chunk ``k + 1``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from pinpipe.clean.records import concat_records, records_from_object
from pinpipe.lake.store import Lake
from pinpipe.tables import batch_app_id


class LandedObject(Protocol):
    """What a chunk needs to know of a landed object (:class:`pinpipe.batch.job._Object`)."""

    @property
    def key(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def start(self) -> int: ...


@dataclass
class Chunk:
    """Records of one chunk (:data:`~pinpipe.clean.records.RECORDS_SCHEMA`, any row order) and its progress."""

    records: pa.Table
    ends: dict[str, int]
    """``pinpipe-batch:<topic>:<partition>`` → the offset after the chunk's last record of that topic-partition."""
    keys: set[str] = field(default_factory=set)
    """Landed objects the chunk holds records of."""


class _Stream:
    """The pending objects of one topic-partition, read one at a time into a buffer of offset-ordered records."""

    def __init__(self, items: Sequence[tuple[LandedObject, int]]) -> None:
        self.items = deque(items)
        self.parts: list[tuple[pa.Table, np.ndarray, str]] = []  # records, their offsets, their object's key

    @property
    def frontier(self) -> float:
        """Every record not read yet has an offset at or beyond this (infinite once every object is read)."""
        if not self.items:
            return float("inf")
        obj, position = self.items[0]
        return float(max(obj.start, position))

    def known(self, below: float) -> int:
        return sum(int(np.searchsorted(offsets, below, side="left")) for _, offsets, _ in self.parts)

    def offsets_below(self, below: float) -> list[np.ndarray]:
        return [offsets[: int(np.searchsorted(offsets, below, side="left"))] for _, offsets, _ in self.parts]

    def take(self, below: float) -> tuple[list[pa.Table], set[str], int | None]:
        """Remove and return the buffered records with offsets below ``below``, their objects and the last offset."""
        taken: list[pa.Table] = []
        keys: set[str] = set()
        last: int | None = None
        rest: list[tuple[pa.Table, np.ndarray, str]] = []
        for table, offsets, key in self.parts:
            n = int(np.searchsorted(offsets, below, side="left"))
            if n:
                taken.append(table.slice(0, n))
                keys.add(key)
                last = int(offsets[n - 1])
            if n < len(offsets):
                rest.append((table.slice(n), offsets[n:], key))
        self.parts = rest
        return taken, keys, last


def iter_chunks(
    lake: Lake,
    pending: Sequence[tuple[LandedObject, int]],
    chunk_records: int,
    on_object: Callable[[int], None] | None = None,
) -> Iterator[Chunk]:
    """The records of ``pending`` (``(object, first offset to take)`` in topic-partition-offset order) as chunks of
    at most about ``chunk_records`` records (more only by the records of other topics at the cut's offset), in
    ``(partition, offset, topic)`` order. ``on_object(n)`` is called after the ``n``-th pending object is read.
    An object listed but gone by the time it is read is skipped (a rewrite in progress: a later run takes it)."""
    if chunk_records < 1:
        raise ValueError("chunk_records must be at least 1")
    by_partition: dict[int, dict[str, list[tuple[LandedObject, int]]]] = {}
    for obj, position in pending:
        by_partition.setdefault(obj.partition, {}).setdefault(obj.topic, []).append((obj, position))
    read = 0
    pieces: list[pa.Table] = []
    ends: dict[str, int] = {}
    keys: set[str] = set()
    size = 0
    for partition in sorted(by_partition):
        streams = {topic: _Stream(items) for topic, items in sorted(by_partition[partition].items())}
        while True:
            room = chunk_records - size
            # read objects (the stream that is furthest behind first) until `room` records are known to come first
            while True:
                frontier = min(s.frontier for s in streams.values())
                if frontier == float("inf") or sum(s.known(frontier) for s in streams.values()) >= room:
                    break
                stream = min(streams.values(), key=lambda s: s.frontier)
                obj, position = stream.items.popleft()
                data = lake.get(obj.key)
                read += 1
                if on_object is not None:
                    on_object(read)
                if data is None:
                    continue
                records = records_from_object(obj.topic, obj.partition, obj.start, obj.key, data, min_offset=position)
                if records.num_rows:
                    offsets = records.column("offset").to_numpy()
                    stream.parts.append((records, offsets, obj.key))
            known = [o for s in streams.values() for o in s.offsets_below(frontier)]
            count = sum(len(o) for o in known)
            cut = frontier
            if count > room:
                # the room-th smallest known offset: the chunk ends after it (every topic's records at it included)
                cut = float(np.partition(np.concatenate(known), room - 1)[room - 1]) + 1
            for topic, stream in streams.items():
                taken, taken_keys, last = stream.take(cut)
                if last is not None:
                    pieces.extend(taken)
                    keys |= taken_keys
                    size += sum(t.num_rows for t in taken)
                    ends[batch_app_id(topic, partition)] = last + 1
            if size >= chunk_records:
                yield Chunk(concat_records(pieces), ends, keys)
                pieces, ends, keys, size = [], {}, set(), 0
            if frontier == float("inf") and not any(s.parts for s in streams.values()):
                break
    if pieces:
        yield Chunk(concat_records(pieces), ends, keys)
