"""How the event-log contract suite gets each backend, and how it takes each one down."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pinpipe.log import EventLog, open_log
from pinpipe.log.memory import MemoryLog


class Backend:
    """A backend under test: ``open()`` gives a new client on the same storage; ``outage(log)`` breaks it."""

    def __init__(
        self,
        url: str,
        outage: Callable[[EventLog], contextlib.AbstractContextManager[None]],
        recovers: bool = True,
    ) -> None:
        self.url = url
        self.recovers = recovers
        self._outage = outage
        self._opened: list[EventLog] = []

    def open(self) -> EventLog:
        log = open_log(self.url)
        self._opened.append(log)
        return log

    def outage(self, log: EventLog) -> contextlib.AbstractContextManager[None]:
        return self._outage(log)

    def close(self) -> None:
        for log in self._opened:
            with contextlib.suppress(Exception):
                log.close()


@contextlib.contextmanager
def _memory_outage(log: EventLog) -> Iterator[None]:
    assert isinstance(log, MemoryLog)
    log.fail()
    try:
        yield
    finally:
        log.recover()


@contextlib.contextmanager
def _disk_outage(log: EventLog) -> Iterator[None]:
    real = os.fdatasync

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    os.fdatasync = broken
    try:
        yield
    finally:
        os.fdatasync = real


@contextlib.contextmanager
def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if name == "memory":
        backend = Backend(f"memory://{uuid.uuid4().hex}", _memory_outage)
    elif name == "embedded":
        backend = Backend(f"file://{tmp_path / 'log'}", _disk_outage)
    elif name == "kafka":
        from tests.contract.log_services import kafka_backend

        backend = kafka_backend(request, tmp_path)
    elif name == "kinesis":
        from tests.contract.log_services import kinesis_backend

        backend = kinesis_backend(request, tmp_path)
    else:
        raise AssertionError(name)
    try:
        yield backend
    finally:
        backend.close()
