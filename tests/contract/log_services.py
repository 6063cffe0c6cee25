"""Kafka (Tansu) and Kinesis (moto) backends for the event-log contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract.log_backends import Backend


def kafka_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    pytest.skip("KafkaLog is not implemented yet")


def kinesis_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    pytest.skip("KinesisLog is not implemented yet")
