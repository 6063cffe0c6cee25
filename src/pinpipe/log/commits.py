"""A small durable store of consumer-group positions: one JSON file per (group, topic), replaced atomically.

Used by :class:`~pinpipe.log.embedded.EmbeddedLog` (under the log directory) and by
:class:`~pinpipe.log.kinesis.KinesisLog` (Kinesis has no consumer offsets of its own); the embedded log's
retention (:mod:`pinpipe.log.retention`) reads every group's positions with :meth:`FileCommitStore.groups` and
never deletes a record at or after the lowest of them. A commit writes a temporary
file, fsyncs it, renames it over the old one and fsyncs the directory, so a crash leaves either the old or the new
positions, never a mix. Several processes may commit different groups at once; one group should have one
committer per topic at a time (its partitions' positions are merged read-modify-write under a process lock).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote

import orjson

from pinpipe.errors import CorruptStateError, LogUnavailableError
from pinpipe.log.integrity import fsync_dir


class FileCommitStore:
    """Positions under ``<root>/<group>/<topic>.json`` as ``{"<partition>": position}``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def _path(self, group: str, topic: str) -> Path:
        return self.root / quote(group, safe="") / f"{quote(topic, safe='')}.json"

    def committed(self, group: str, topic: str) -> dict[int, int]:
        path = self._path(group, topic)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LogUnavailableError(f"cannot read commits at {path}: {exc}", backend="commits") from exc
        try:
            doc = orjson.loads(raw)
            return {int(p): int(pos) for p, pos in doc.items()}
        except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError) as exc:
            raise CorruptStateError(
                f"commit file {path} is not a JSON object of partition → position",
                hint="restore it from backup or delete it to restart the group from the beginning",
            ) from exc

    def highest(self, topic: str) -> dict[int, tuple[int, str]]:
        """Per partition of ``topic``, the highest position any group committed and that group (the embedded log
        checks on open that its data reaches it: offsets a reader saw are never handed out again)."""
        out: dict[int, tuple[int, str]] = {}
        name = f"{quote(topic, safe='')}.json"
        try:
            groups = sorted(p for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return out
        for folder in groups:
            if not (folder / name).exists():
                continue
            group = unquote(folder.name)
            for partition, position in self.committed(group, topic).items():
                if partition not in out or position > out[partition][0]:
                    out[partition] = (position, group)
        return out

    def groups(self, topic: str) -> dict[str, tuple[dict[int, int], float]]:
        """Every group that committed on ``topic``: its positions and when its commit file was last written
        (epoch seconds; embedded-log retention expires a group whose last commit is too old)."""
        out: dict[str, tuple[dict[int, int], float]] = {}
        name = f"{quote(topic, safe='')}.json"
        try:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return out
        for folder in folders:
            try:
                written = (folder / name).stat().st_mtime
            except FileNotFoundError:
                continue
            group = unquote(folder.name)
            out[group] = (self.committed(group, topic), written)
        return out

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        path = self._path(group, topic)
        with self._lock:
            merged = self.committed(group, topic)
            merged.update({int(p): int(pos) for p, pos in positions.items()})
            payload = orjson.dumps({str(p): pos for p, pos in sorted(merged.items())})
            try:
                if not path.parent.is_dir():  # a new group: its folder (and ``root``) must survive a power loss
                    path.parent.mkdir(parents=True, exist_ok=True)
                    for folder in (self.root, self.root.parent):
                        fsync_dir(folder)
                tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, payload)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
                fsync_dir(path.parent)
            except OSError as exc:
                raise LogUnavailableError(f"cannot write commits at {path}: {exc}", backend="commits") from exc
