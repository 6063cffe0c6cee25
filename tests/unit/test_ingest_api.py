"""The ingestion API in both dialects, in process, over a memory log: exact bodies and status codes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from pinpipe.config import load_settings
from pinpipe.errors import ConfigError
from pinpipe.ingest.app import create_app, route_path
from pinpipe.log.memory import MemoryLog

KAFKA_JSON = "application/vnd.kafka.json.v2+json"
PIN = "0affea73130b.pin"
GEO = "0affea73130b.geo"
USER_STREAM = "streaming-0affea73130b-user"
GEO_ROW = {
    "ind": 7528,
    "timestamp": "2020-08-28 03:52:47",
    "latitude": -89.9787,
    "longitude": -173.293,
    "country": "Albania",
}
USER_ROW = {"ind": 7528, "first_name": "Abigail", "last_name": "Ali", "age": 20, "date_joined": "2015-10-24T11:23:51"}


@pytest.fixture
def log(workdir: Any) -> MemoryLog:
    return MemoryLog(uuid.uuid4().hex)


@pytest.fixture
def client(log: MemoryLog) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(), log)) as c:
        yield c


def _post(client: TestClient, topic: str, body: Any, ctype: str = KAFKA_JSON) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/topics/{topic}", content=raw, headers={"content-type": ctype})


def _stored(log: MemoryLog, topic: str) -> list[bytes]:
    return [r.value for r in log.read(topic, 0, 0)]


def test_produce_answers_like_the_rest_proxy(client: TestClient, log: MemoryLog) -> None:
    other = {**GEO_ROW, "ind": 1, "timestamp": "2019-01-01T00:00:00"}
    resp = _post(client, GEO, {"records": [{"value": GEO_ROW}, {"value": other}]})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.kafka.v2+json"
    assert resp.content == (
        b'{"offsets":[{"partition":0,"offset":0,"error_code":null,"error":null},'
        b'{"partition":0,"offset":1,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}'
    )
    assert _stored(log, GEO) == [orjson.dumps(GEO_ROW), orjson.dumps(other)]
    assert [r.key for r in log.read(GEO, 0, 0)] == [b"7528", b"1"]


def test_stage_prefix_and_metadata(client: TestClient) -> None:
    assert _post(client, GEO, {"records": [{"value": GEO_ROW}]}).status_code == 200
    resp = client.post(
        f"/test/topics/{GEO}",
        content=orjson.dumps({"records": [{"value": GEO_ROW}]}),
        headers={"content-type": KAFKA_JSON},
    )
    assert resp.json()["offsets"][0]["offset"] == 1
    assert client.get("/topics").json() == ["0affea73130b.geo", "0affea73130b.pin", "0affea73130b.user"]
    assert client.get(f"/topics/{PIN}").json() == {
        "name": PIN,
        "configs": {},
        "partitions": [{"partition": 0, "leader": 0, "replicas": [{"broker": 0, "leader": True, "in_sync": True}]}],
    }
    assert client.get("/topics/nope").json() == {"error_code": 40401, "message": "Topic nope not found."}


@pytest.mark.parametrize(
    ("topic", "body", "ctype", "status", "expected"),
    [
        (
            GEO,
            {"records": [{"value": GEO_ROW}]},
            "application/json",
            415,
            {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"},
        ),
        (
            "0affea73130b.nope",
            {"records": [{"value": GEO_ROW}]},
            KAFKA_JSON,
            404,
            {"error_code": 40401, "message": "Topic 0affea73130b.nope not found."},
        ),
        (GEO, {"records": []}, KAFKA_JSON, 422, {"error_code": 422, "message": "records may not be empty"}),
        (GEO, {"nothing": 1}, KAFKA_JSON, 422, {"error_code": 422, "message": "records may not be empty"}),
        (
            GEO,
            {"records": [{"value": GEO_ROW}, {"value": {**GEO_ROW, "latitude": "north"}}]},
            KAFKA_JSON,
            422,
            {"error_code": 42206, "message": "records[1].value rejected: bad_type:latitude"},
        ),
        (
            GEO,
            {"records": [{"value": {**GEO_ROW, "extra": 1}}]},
            KAFKA_JSON,
            422,
            {"error_code": 42206, "message": "records[0].value rejected: unknown_field:extra"},
        ),
        (
            GEO,
            {"records": [{"value": [GEO_ROW]}]},
            KAFKA_JSON,
            422,
            {"error_code": 42206, "message": "records[0].value rejected: not_an_object"},
        ),
        (
            PIN,
            {"records": [{"value": {"title": "x"}}]},
            KAFKA_JSON,
            422,
            {"error_code": 42206, "message": "records[0].value rejected: missing_key:index"},
        ),
        (
            GEO,
            {"records": [{"key": "k"}]},
            KAFKA_JSON,
            422,
            {"error_code": 42206, "message": "records[0] rejected: value is missing"},
        ),
    ],
)
def test_produce_rejections(
    client: TestClient, log: MemoryLog, topic: str, body: Any, ctype: str, status: int, expected: Any
) -> None:
    resp = _post(client, topic, body, ctype)
    assert (resp.status_code, resp.json()) == (status, expected)
    assert _stored(log, GEO) == [] and _stored(log, PIN) == []


def test_malformed_json_and_oversized_record(client: TestClient, log: MemoryLog) -> None:
    resp = _post(client, GEO, b'{"records": [')
    assert resp.status_code == 422
    assert resp.json()["error_code"] == 42203
    assert resp.json()["message"].startswith("request body is not valid JSON")
    huge = {"index": 1, "description": "x" * (1024 * 1024 + 10)}
    resp = _post(client, PIN, {"records": [{"value": huge}]})
    assert resp.status_code == 422
    assert resp.json()["message"].startswith("records[0].value rejected: record_too_large")
    resp = _post(client, PIN, b"x" * (6 * 1024 * 1024))
    assert resp.status_code == 413 and resp.json()["error_code"] == 413
    assert _stored(log, GEO) == [] and _stored(log, PIN) == []


def test_log_outage_gives_503_and_acknowledges_nothing(client: TestClient, log: MemoryLog) -> None:
    assert _post(client, GEO, {"records": [{"value": GEO_ROW}]}).status_code == 200
    log.fail()
    resp = _post(client, GEO, {"records": [{"value": GEO_ROW}]})
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.json() == {
        "error_code": 50003,
        "message": "the event log is unavailable: memory log is failing (injected fault)",
    }
    kin = client.put(f"/streams/{USER_STREAM}/record", json={"Data": USER_ROW, "PartitionKey": "p"})
    assert kin.status_code == 503 and kin.json()["__type"] == "ServiceUnavailable"
    assert client.get("/healthz").status_code == 503
    log.recover()
    assert client.get("/healthz").json()["status"] == "ok"
    assert len(_stored(log, GEO)) == 1


def test_kinesis_put_record_and_records(client: TestClient, log: MemoryLog) -> None:
    body = {"StreamName": "YourStreamName", "Data": USER_ROW, "PartitionKey": "partition-1"}
    resp = client.put(
        f"/streams/{USER_STREAM}/record", content=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200
    assert resp.json() == {"SequenceNumber": "49" + "0" * 26, "ShardId": "shardId-000000000000"}
    second = {**USER_ROW, "ind": 9}
    resp = client.put(
        f"/test/streams/{USER_STREAM}/records",
        json={
            "Records": [
                {"Data": second, "PartitionKey": "a"},
                {"Data": orjson.dumps(USER_ROW).decode(), "PartitionKey": "b"},  # JSON text is accepted too
            ]
        },
    )
    assert resp.json() == {
        "FailedRecordCount": 0,
        "Records": [
            {"SequenceNumber": "49" + "0" * 25 + "1", "ShardId": "shardId-000000000000"},
            {"SequenceNumber": "49" + "0" * 25 + "2", "ShardId": "shardId-000000000000"},
        ],
    }
    assert _stored(log, USER_STREAM) == [orjson.dumps(USER_ROW), orjson.dumps(second), orjson.dumps(USER_ROW)]
    resp = client.put(f"/streams/{USER_STREAM}/records", json={"records": [{"data": USER_ROW, "partition-key": "x"}]})
    assert resp.status_code == 200
    assert client.get("/streams").json() == {
        "HasMoreStreams": False,
        "StreamNames": ["streaming-0affea73130b-geo", "streaming-0affea73130b-pin", "streaming-0affea73130b-user"],
    }


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/streams/streaming-x-user/record",
            {"Data": USER_ROW, "PartitionKey": "p"},
            {
                "__type": "ResourceNotFoundException",
                "message": "Stream streaming-x-user under account 000000000000 not found.",
            },
        ),
        (
            f"/streams/{USER_STREAM}/record",
            {"Data": {**USER_ROW, "age": "old"}, "PartitionKey": "p"},
            {
                "__type": "ValidationException",
                "message": "1 validation error detected: Records[0].Data rejected: bad_type:age",
            },
        ),
        (
            f"/streams/{USER_STREAM}/records",
            {"Records": [{"Data": USER_ROW, "PartitionKey": "p"}] * 501},
            {
                "__type": "ValidationException",
                "message": "1 validation error detected: Value at 'records' failed to "
                "satisfy constraint: Member must have length less than or equal to 500",
            },
        ),
        (
            f"/streams/{USER_STREAM}/records",
            {"Records": []},
            {
                "__type": "ValidationException",
                "message": "1 validation error detected: Value at 'records' failed to "
                "satisfy constraint: Member must have length greater than or equal to 1",
            },
        ),
    ],
)
def test_kinesis_rejections(client: TestClient, log: MemoryLog, path: str, body: Any, expected: Any) -> None:
    resp = client.put(path, json=body)
    assert (resp.status_code, resp.json()) == (400, expected)
    assert _stored(log, USER_STREAM) == []


def test_kinesis_missing_partition_key_and_bad_json(client: TestClient, log: MemoryLog) -> None:
    resp = client.put(f"/streams/{USER_STREAM}/record", json={"Data": USER_ROW})
    assert resp.status_code == 400 and resp.json()["__type"] == "ValidationException"
    resp = client.put(f"/streams/{USER_STREAM}/record", content=b"{oops")
    assert resp.status_code == 400 and resp.json()["message"].startswith("Could not parse request body into json")
    assert _stored(log, USER_STREAM) == []


def test_api_key(log: MemoryLog) -> None:
    with pytest.raises(ConfigError, match="without an API key"):
        create_app(load_settings({"api": {"host": "0.0.0.0"}}), log)
    settings = load_settings({"api": {"host": "0.0.0.0", "api_key": "s3cret"}})
    with TestClient(create_app(settings, log)) as client:
        assert _post(client, GEO, {"records": [{"value": GEO_ROW}]}).json()["error_code"] == 40101
        assert client.put(f"/streams/{USER_STREAM}/record", json={}).status_code == 403
        assert client.get("/healthz").status_code == 200
        ok = client.post(
            f"/topics/{GEO}",
            content=orjson.dumps({"records": [{"value": GEO_ROW}]}),
            headers={"content-type": KAFKA_JSON, "x-api-key": "s3cret"},
        )
        assert ok.status_code == 200


def test_metrics_count_requests_and_records(client: TestClient) -> None:
    _post(client, GEO, {"records": [{"value": GEO_ROW}] * 3})
    _post(client, GEO, {"records": [{"value": {"bad": 1}}]})
    text = client.get("/metrics").text
    assert 'pinpipe_api_records_total{outcome="accepted",topic="0affea73130b.geo"} 3.0' in text
    assert 'pinpipe_api_records_total{outcome="rejected",topic="0affea73130b.geo"} 1.0' in text
    assert 'pinpipe_api_requests_total{method="POST",route="/topics/{topic}",status="422"} 1.0' in text
    assert "pinpipe_api_append_seconds_bucket" in text
    assert client.get("/openapi.json").json()["paths"]["/topics/{topic}"]["post"]


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/topics/a", "", "/topics/a"),
        ("/test/topics/a", "", "/topics/a"),
        ("/test/healthz", "", "/healthz"),
        ("/topics/streams/x", "", "/topics/streams/x"),
        ("/test/topics/a", "/test", "/topics/a"),  # the client sent /topics/a; uvicorn prepended /test
        ("/test/test/topics/a", "/test", "/topics/a"),  # the client sent the stage itself
        ("/test/prod/streams/s/record", "/test", "/streams/s/record"),
        ("/test/test/openapi.json", "/test", "/openapi.json"),
        ("/test/docs", "/test", "/docs"),
        ("/test/a/healthz/x", "/test", "/healthz/x"),  # not /healthz: not open, and no route
    ],
)
def test_route_path_strips_the_root_path_and_one_stage(path: str, root_path: str, expected: str) -> None:
    assert route_path(path, root_path) == expected
