"""The unit of input to cleaning: one record as stored in the log or landed in the lake."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record exactly as stored: a JSON object (no envelope) and where it came from.

    ``(topic, partition, offset)`` identifies it; the last record of an ``ind`` in ``(partition, offset)`` order wins.
    ``source`` is the landed object key (batch path) or ``"log"`` (stream path).
    """

    topic: str
    partition: int
    offset: int
    line: bytes
    source: str
