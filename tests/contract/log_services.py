"""Kafka (Tansu) and Kinesis (moto) backends for the event-log contract suite.

The session fixtures ``kafka`` and ``moto`` serve most tests; the outage test of each gets a private server of
its own, so stopping it does not disturb the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.log import EventLog
from tests.contract.log_backends import Backend
from tests.fixtures.services import Service, moto_server, tansu_broker


def _private(request: pytest.FixtureRequest) -> bool:
    return request.node.name.startswith("test_unavailable_backend")


def kafka_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if _private(request):
        stack = contextlib.ExitStack()
        request.addfinalizer(stack.close)
        svc: Service = stack.enter_context(tansu_broker(tmp_path / "tansu"))
    else:
        svc = request.getfixturevalue("kafka")

    @contextlib.contextmanager
    def outage(log: EventLog) -> Iterator[None]:
        svc.stop()
        yield

    return Backend(f"kafka://127.0.0.1:{svc.port}?timeout_ms=3000", outage, recovers=False)


def kinesis_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if _private(request):
        stack = contextlib.ExitStack()
        request.addfinalizer(stack.close)
        svc: Service = stack.enter_context(moto_server(tmp_path / "moto"))
    else:
        svc = request.getfixturevalue("moto")

    @contextlib.contextmanager
    def outage(log: EventLog) -> Iterator[None]:
        svc.stop()
        yield

    return Backend(
        f"kinesis://us-east-1?endpoint=http://127.0.0.1:{svc.port}&commits={tmp_path / 'commits'}",
        outage,
        recovers=False,
    )
