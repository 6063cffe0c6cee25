"""The embedded log's ``DIR/topics.json``: topic → partition count, read by every process, written by the writer.

Who calls what: :class:`~pinpipe.log.embedded.EmbeddedLog` reads it through :meth:`TopicsFile.load` (re-read
only when its mtime changed; the writer process, the only one that changes it, never needs to stat it) and
adds topics with :meth:`TopicsFile.add`: a temporary file, fsync, rename, fsync of the directory (and of its
parent for a new log directory), so a topic acknowledged once survives power loss.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import orjson

from pinpipe.errors import ConfigError
from pinpipe.log.integrity import fsync_dir

TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""Kafka's rule for topic names."""


class TopicsFile:
    """``topics.json`` of one log directory, with the last version read kept in memory (not thread-safe:
    the caller holds its metadata lock)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "topics.json"
        self._topics: dict[str, int] = {}
        self._mtime = -1.0

    def load(self, sole_writer: bool = False) -> dict[str, int]:
        """The topics (an empty dict while the file does not exist)."""
        if sole_writer and self._mtime != -1.0:
            return self._topics  # nobody else changes topics.json: no need to stat
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return self._topics
        if mtime != self._mtime:
            self._topics = {str(t): int(n) for t, n in orjson.loads(self.path.read_bytes()).items()}
            self._mtime = mtime
        return self._topics

    def __contains__(self, topic: object) -> bool:
        """Whether the version last read holds ``topic`` (no file access: the append path's quick check)."""
        return topic in self._topics

    @staticmethod
    def check_names(topics: Sequence[str]) -> None:
        for topic in topics:
            if not TOPIC_RE.match(topic):
                raise ConfigError(f"invalid topic name {topic!r}", hint="use 1-249 characters from A-Za-z0-9._-")

    def add(self, topics: Sequence[str], partitions: int) -> None:
        """Write ``topics`` (with ``partitions`` each) beside the ones the file holds, durably."""
        current = dict(self.load())
        for topic in topics:
            current.setdefault(topic, partitions)
        first = not self.path.exists()
        tmp = self.path.with_name(f"topics.json.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(current))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        if first:  # a new log directory: its own entry too
            fsync_dir(self.path.parent.parent)
        self._mtime = -1.0
        self.load()
