"""Foreign errors are mapped into the tree in one table; a test fails when a boundary lets one escape."""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import Callable

import botocore.exceptions
import confluent_kafka
import deltalake.exceptions
import httpx
import obstore.exceptions
import pytest
import sqlalchemy.exc

from pinpipe.errors import (
    FOREIGN_ERRORS,
    CommitConflictError,
    ConfigError,
    LogUnavailableError,
    PinpipeError,
    SourceUnavailableError,
    StoreUnavailableError,
    UnknownTopicError,
    map_exceptions,
)

FOREIGN: dict[str, Callable[[], BaseException]] = {
    "confluent_kafka.KafkaException": lambda: confluent_kafka.KafkaException(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT)
    ),
    "builtins.BufferError": lambda: BufferError("queue full"),
    "botocore.exceptions.ClientError": lambda: botocore.exceptions.ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutRecords"
    ),
    "botocore.exceptions.BotoCoreError": lambda: botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
    "sqlalchemy.exc.OperationalError": lambda: sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("refused")),
    "sqlalchemy.exc.DBAPIError": lambda: sqlalchemy.exc.ProgrammingError("SELECT x", {}, Exception("no such column")),
    "sqlalchemy.exc.ArgumentError": lambda: sqlalchemy.exc.ArgumentError("bad URL"),
    "sqlalchemy.exc.NoSuchModuleError": lambda: sqlalchemy.exc.NoSuchModuleError("no dialect"),
    "httpx.TransportError": lambda: httpx.ConnectError("connection refused"),
    "builtins.OSError": lambda: ConnectionResetError("reset by peer"),
    "builtins.TimeoutError": lambda: TimeoutError("timed out"),
    "asyncio.IncompleteReadError": lambda: asyncio.IncompleteReadError(b"HTTP/1.1 2", 100),
    "builtins.ValueError": lambda: ValueError("invalid literal for int() with base 10: b'garbage'"),
    "obstore.exceptions.NotFoundError": lambda: obstore.exceptions.NotFoundError("no such object"),
    "obstore.exceptions.PermissionDeniedError": lambda: obstore.exceptions.PermissionDeniedError("denied"),
    "obstore.exceptions.UnauthenticatedError": lambda: obstore.exceptions.UnauthenticatedError("bad key"),
    "obstore.exceptions.InvalidPathError": lambda: obstore.exceptions.InvalidPathError("bad path"),
    "obstore.exceptions.BaseError": lambda: obstore.exceptions.GenericError("503 Slow Down"),
    "deltalake.exceptions.CommitFailedError": lambda: deltalake.exceptions.CommitFailedError("version 3 exists"),
    "deltalake.exceptions.SchemaMismatchError": lambda: deltalake.exceptions.SchemaMismatchError("columns differ"),
    "deltalake.exceptions.DeltaProtocolError": lambda: deltalake.exceptions.DeltaProtocolError("bad log"),
    "deltalake.exceptions.TableNotFoundError": lambda: deltalake.exceptions.TableNotFoundError("no table"),
    "deltalake.exceptions.DeltaError": lambda: deltalake.exceptions.DeltaError("io"),
    "builtins.FileNotFoundError": lambda: FileNotFoundError(2, "No such file", "/nope"),
    "builtins.PermissionError": lambda: PermissionError(13, "Permission denied", "/root/x"),
}

RULES = [(boundary, rule) for boundary, rules in FOREIGN_ERRORS.items() for rule in rules]


@pytest.mark.parametrize(("boundary", "rule"), RULES, ids=[f"{b}:{r.name}:{r.code}" for b, r in RULES])
def test_every_rule_names_a_real_exception_class(boundary: str, rule: object) -> None:
    cls = getattr(importlib.import_module(rule.module), rule.name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)


@pytest.mark.parametrize("boundary", list(FOREIGN_ERRORS))
def test_each_boundary_maps_every_foreign_error_it_lists(boundary: str) -> None:
    for rule in FOREIGN_ERRORS[boundary]:
        if rule.code is not None:
            continue  # coded rules are exercised below
        foreign = FOREIGN[f"{rule.module}.{rule.name}"]()
        with pytest.raises(PinpipeError) as caught, map_exceptions(boundary, "doing a thing", table="t"):
            raise foreign
        assert caught.value.__cause__ is foreign
        assert caught.value.message.startswith("doing a thing: ")
        assert caught.value.facts["table"] == "t" and caught.value.facts["backend"] == boundary


def test_error_codes_pick_the_specific_class() -> None:
    missing = botocore.exceptions.ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "DescribeStream")
    with pytest.raises(UnknownTopicError), map_exceptions("kinesis", "describe"):
        raise missing
    unknown = confluent_kafka.KafkaException(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART)
    )
    with pytest.raises(UnknownTopicError), map_exceptions("kafka", "produce"):
        raise unknown
    with pytest.raises(CommitConflictError), map_exceptions("delta", "merge"):
        raise deltalake.exceptions.CommitFailedError("lost")
    no_bucket = obstore.exceptions.GenericError("Generic S3 error: ... <Error><Code>NoSuchBucket</Code></Error>")
    with pytest.raises(ConfigError, match="NoSuchBucket"), map_exceptions("store", "listing"):
        raise no_bucket
    no_bucket = obstore.exceptions.GenericError("Generic S3 error: ... <Error><Code>NoSuchBucket</Code></Error>")
    with pytest.raises(ConfigError, match="NoSuchBucket"), map_exceptions("store", "listing"):
        raise no_bucket


def test_a_foreign_error_without_a_rule_escapes_as_the_bug_it_is() -> None:
    with pytest.raises(ZeroDivisionError), map_exceptions("store", "reading"):
        raise ZeroDivisionError("a bug")
    with pytest.raises(RuntimeError), map_exceptions("store", "reading"):  # not "store unavailable": a bug
        raise RuntimeError("a bug")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_kinesis_boundary_lets_no_foreign_error_out() -> None:
    from pinpipe.log import open_log

    log = open_log(f"kinesis://us-east-1?endpoint=http://127.0.0.1:{_closed_port()}")
    for call in (log.topics, lambda: log.ensure_topics(["s"], 1), lambda: log.append("s", [b"{}"], [b"1"])):
        with pytest.raises(LogUnavailableError):
            call()


def test_the_source_boundary_lets_no_foreign_error_out() -> None:
    from pinpipe.source.database import count_rows, create_source_engine, source_errors

    engine = create_source_engine(f"postgresql+psycopg://u:p@127.0.0.1:{_closed_port()}/db")
    with pytest.raises(SourceUnavailableError), source_errors(engine), engine.connect() as conn:
        count_rows(conn, "pinterest_data")


def test_the_emulator_s_http_boundary_lets_no_foreign_error_out() -> None:
    from pinpipe.emulate.client import HttpConnection
    from pinpipe.errors import ApiUnavailableError, ConfigError

    async def ask() -> None:
        conn = HttpConnection(f"http://127.0.0.1:{_closed_port()}", timeout_s=2)
        try:
            await conn.request("GET", "/healthz", {}, b"")
        finally:
            await conn.close()

    with pytest.raises(ApiUnavailableError, match="got no answer"):
        asyncio.run(ask())
    with pytest.raises(ConfigError):
        HttpConnection("ftp://127.0.0.1:1")


def test_store_and_delta_errors_map_to_retryable_classes() -> None:
    with pytest.raises(StoreUnavailableError), map_exceptions("store", "listing"):
        raise obstore.exceptions.GenericError("connection reset")
    with pytest.raises(StoreUnavailableError), map_exceptions("delta", "merging"):
        raise deltalake.exceptions.DeltaError("io error")
