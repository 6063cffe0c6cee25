"""The emulator's send log and what an acknowledgement says about where each record went.

Called by :mod:`pinpipe.emulate.emulator` for every attempt (:class:`SendLog`) and every acknowledged answer
(:func:`positions`); the line format is described in that module's docstring and read by ``pinpipe
accounting`` (:mod:`pinpipe.checks.accounting`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import orjson


class Sent(Protocol):
    """What the log needs of a request (the emulator's ``_Request``)."""

    @property
    def request_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def topic(self) -> str: ...


def positions(dialect: Literal["batch", "stream"], inds: list[int], doc: Any) -> list[dict[str, Any]]:
    """``{"ind", "partition", "offset"}`` per acknowledged record (stream dialect: ``shard_id`` and
    ``sequence_number`` too; partition and offset only when decodable from a pinpipe sequence number)."""
    if dialect == "batch":
        offsets = doc.get("offsets", []) if isinstance(doc, dict) else []
        return [
            {"ind": i, "partition": o.get("partition"), "offset": o.get("offset")}
            for i, o in zip(inds, offsets, strict=False)
        ]
    entries = doc.get("Records", [doc]) if isinstance(doc, dict) else []
    out = []
    for ind, entry in zip(inds, entries, strict=False):
        seq = str(entry.get("SequenceNumber", ""))
        rec: dict[str, Any] = {"ind": ind, "shard_id": entry.get("ShardId"), "sequence_number": seq}
        if len(seq) == 28 and seq.startswith("49"):  # pinpipe's API: 49 + partition(6) + offset(20)
            rec["partition"], rec["offset"] = int(seq[2:8]), int(seq[8:])
        out.append(rec)
    return out


class SendLog:
    """One JSON line per attempt and per answer, appended to ``path`` (nothing when None)."""

    def __init__(self, path: Path | None) -> None:
        self._fh: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def write(self, event: str, req: Sent, attempt: int, **facts: Any) -> None:
        if self._fh is not None:
            doc = {
                "ts": round(time.time(), 6),
                "event": event,
                "request_id": req.request_id,
                "attempt": attempt,
                "kind": req.kind,
                "topic": req.topic,
                **facts,
            }
            self._fh.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE).decode())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
