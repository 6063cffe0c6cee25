"""Shared fixtures. Real services are session-scoped and started on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.databases import DatabaseServer, mariadb_server, postgres_server
from tests.fixtures.services import Service, moto_server, tansu_broker

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A moto server (S3 + Kinesis) for the whole session."""
    with moto_server(tmp_path_factory.mktemp("moto")) as svc:
        yield svc


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A Tansu Kafka broker (in-memory storage) for the whole session; ``kafka.port`` is its port."""
    with tansu_broker(tmp_path_factory.mktemp("tansu")) as svc:
        yield svc


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    """A MariaDB server for the whole session; ``mariadb.new_database()`` gives a test its own database URL."""
    with mariadb_server(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    """A PostgreSQL server for the whole session; ``postgres.new_database()`` gives a test its own database URL."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory (default data paths resolve under it)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("PINPIPE"):
            monkeypatch.delenv(name)
    return tmp_path
