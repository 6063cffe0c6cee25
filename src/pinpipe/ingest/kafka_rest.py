"""The Kafka REST Proxy v2 dialect: ``POST /topics/{topic}``, ``GET /topics``, ``GET /topics/{topic}``.

Called by clients such as the original's batch emulator (``Content-Type: application/vnd.kafka.json.v2+json``,
body ``{"records":[{"value":{...}}]}``). Answers as the proxy does (protocols §1):

======  ============  ==========================================================================
status  error_code    when
======  ============  ==========================================================================
200     —             every record durable; ``offsets`` in request order, nulls serialised
404     40401         the topic is not one of ``<prefix>.pin|geo|user``
408     40801         the body did not arrive within ``api.body_timeout_s`` (the connection is closed)
413     413           the body is larger than ``api.max_request_bytes`` (refused while reading; connection closed)
415     415           the Content-Type is not ``application/vnd.kafka.json.v2+json``
422     42203         the body is not valid JSON
422     422           ``records`` missing, not a list, or empty ("records may not be empty")
422     42206         a record has no ``value``, fails ``validate_raw`` (the reason verbatim), or is > 1 MiB;
                      the message names the record index; nothing of the request is appended
503     50003         the log is unavailable or did not confirm the write within the append timeout (the
                      records may still land); ``Retry-After`` set
503     50002         any other failure of the log (``Retry-After`` set; the error is logged)
======  ============  ==========================================================================

Every failure of the log answers 503, never a 2xx — also ``GET /topics/{topic}``, which asks the log.

``key`` and ``partition`` fields of a record are accepted and ignored: the record is keyed by its ``ind``.
``GET /topics`` lists the three REST topics (the Kinesis dialect's log topics are listed by ``GET /streams``).
In the running app ``POST /topics/{topic}`` is answered by :class:`~pinpipe.ingest.app.IngestMiddleware` calling
:func:`check_head` and :func:`produce_body` directly; the FastAPI route below documents it and gives the same
answers when the middleware is absent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pinpipe.errors import PinpipeError, RetryableError, UnknownTopicError
from pinpipe.ingest.state import (
    MAX_RECORD_BYTES,
    RETRY_AFTER_S,
    Answer,
    BodyTimeout,
    IngestState,
    Receive,
    append_durably,
    json_response,
    read_body,
    state_of,
    to_response,
)
from pinpipe.ingest.validate import check_record, encode_valid, row_schema
from pinpipe.tables import KINDS, Kind, key_of
from pinpipe.telemetry.logs import get_logger

PRODUCE_TYPE = "application/vnd.kafka.json.v2+json"
RESPONSE_TYPE = "application/vnd.kafka.v2+json"

router = APIRouter(tags=["kafka-rest-v2"])
log = get_logger("ingest")
CLOSE = {"Connection": "close"}
"""Headers of an answer sent before the body was read to its end: the rest is not read, so the connection closes."""

_ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
}
_PRODUCE_BODY = {
    "type": "object",
    "required": ["records"],
    "properties": {
        "records": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["value"],
                "properties": {
                    "key": {},
                    "partition": {"type": "integer"},
                    "value": {"anyOf": [row_schema(k) for k in KINDS], "description": "one row of the topic's table"},
                },
            },
        }
    },
}
_PRODUCE_OK = {
    "type": "object",
    "properties": {
        "offsets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "partition": {"type": ["integer", "null"]},
                    "offset": {"type": ["integer", "null"]},
                    "error_code": {"type": ["integer", "null"]},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
        "key_schema_id": {"type": "null"},
        "value_schema_id": {"type": "null"},
    },
}


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, RESPONSE_TYPE, orjson.dumps({"error_code": code, "message": message}), headers)


def _err_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": "error envelope", "content": {RESPONSE_TYPE: {"schema": _ERROR}}} for c in codes}


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def _topic_not_found(topic: str) -> Answer:
    return _error(404, 40401, f"Topic {topic} not found.")


def _prepare(kind: Kind, doc: Any) -> tuple[list[bytes], list[bytes | None]] | Answer:
    """Values and keys to append, or the 422 answer for the first bad record."""
    records = doc.get("records") if isinstance(doc, dict) else None
    if not isinstance(records, list) or not records:
        return _error(422, 422, "records may not be empty")
    try:
        fast = encode_valid(kind, [record["value"] for record in records], MAX_RECORD_BYTES)
    except (TypeError, KeyError):
        fast = None
    if fast is not None:
        return fast
    values: list[bytes] = []
    keys: list[bytes | None] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "value" not in record:
            return _error(422, 42206, f"records[{i}] rejected: value is missing")
        value = record["value"]
        reason = check_record(kind, value)
        if reason is not None:
            return _error(422, 42206, f"records[{i}].value rejected: {reason}")
        try:
            blob = orjson.dumps(value)
        except orjson.JSONEncodeError:
            return _error(422, 42206, f"records[{i}].value rejected: not_serialisable")
        if len(blob) > MAX_RECORD_BYTES:
            return _error(
                422, 42206, f"records[{i}].value rejected: record_too_large ({len(blob)} bytes > {MAX_RECORD_BYTES})"
            )
        values.append(blob)
        keys.append(str(key_of(kind, value)).encode())
    return values, keys


@router.post(
    "/topics/{topic}",
    summary="Produce JSON records to a topic (Kafka REST Proxy v2)",
    openapi_extra={"requestBody": {"required": True, "content": {PRODUCE_TYPE: {"schema": _PRODUCE_BODY}}}},
    responses={
        200: {"description": "records durable", "content": {RESPONSE_TYPE: {"schema": _PRODUCE_OK}}},
        **_err_responses(404, 408, 413, 415, 422, 503),
    },
)
async def produce(topic: str, request: Request) -> Response:
    # The running app answers this route from IngestMiddleware's fast path (same function, no framework
    # overhead); this handler serves the same answers when the app is mounted without that middleware.
    headers = request.headers
    answer = await answer_produce(
        state_of(request), topic, headers.get("content-type", ""), headers.get("content-length", ""), request.receive
    )
    return to_response(answer)


async def answer_produce(state: IngestState, topic: str, content_type: str, declared: str, receive: Receive) -> Answer:
    """The whole produce exchange: headers checked, body read (bounded in size and time), records appended."""
    head = check_head(state, topic, content_type, declared)
    if isinstance(head, Answer):
        return head
    try:
        body = await read_body(receive, state.settings.api.max_request_bytes, state.deadlines)
    except BodyTimeout as exc:
        return _error(408, 40801, f"{exc}; send the whole request within api.body_timeout_s", CLOSE)
    if body is None:
        return too_large(state)
    return await produce_body(state, topic, head, body)


def check_head(state: IngestState, topic: str, content_type: str, declared: str) -> Answer | Kind:
    """The answer for a request that fails on its headers alone, else the topic's kind."""
    if _media_type(content_type) != PRODUCE_TYPE:
        return _error(415, 415, "HTTP 415 Unsupported Media Type")
    kind = state.rest_topics.get(topic)
    if kind is None:
        return _topic_not_found(topic)
    limit = state.settings.api.max_request_bytes
    if declared.isdigit() and int(declared) > limit:
        return _error(413, 413, f"request body of {declared} bytes is larger than the limit of {limit} bytes", CLOSE)
    return kind


def too_large(state: IngestState) -> Answer:
    limit = state.settings.api.max_request_bytes
    return _error(413, 413, f"request body is larger than the limit of {limit} bytes", CLOSE)


async def produce_body(state: IngestState, topic: str, kind: Kind, body: bytes) -> Answer:
    """Validate, append durably and answer one produce request whose headers passed :func:`check_head`."""
    if len(body) > state.settings.api.max_request_bytes:
        return too_large(state)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(422, 42203, f"request body is not valid JSON: {exc}")
    prepared = _prepare(kind, doc)
    if isinstance(prepared, Answer):
        n = len(doc["records"]) if isinstance(doc, dict) and isinstance(doc.get("records"), list) else 1
        state.metrics.record_count(topic, "rejected", max(n, 1))
        return prepared
    values, keys = prepared
    return await _append(state, topic, values, keys)


def _log_failed(exc: BaseException | str) -> Answer:
    """503 for a failure of the log: 50003 when retrying may succeed, 50002 otherwise; never a 2xx."""
    retry = {"Retry-After": RETRY_AFTER_S}
    if isinstance(exc, str):
        return _error(503, 50003, exc, retry)
    if isinstance(exc, RetryableError):
        return _error(503, 50003, f"the event log is unavailable: {exc.message}", retry)
    if isinstance(exc, PinpipeError):
        log.error("event log failed", extra={"fields": {"error": exc.message, "type": type(exc).__name__}})
        return _error(503, 50002, f"the event log failed: {exc.message}", retry)
    log.error("event log failed unexpectedly", exc_info=exc)
    return _error(503, 50002, f"the event log failed: {type(exc).__name__}", retry)


async def _append(state: IngestState, topic: str, values: list[bytes], keys: list[bytes | None]) -> Answer:
    try:
        placed = await append_durably(state, topic, values, keys)
    except TimeoutError:
        return _log_failed("the event log did not confirm the write in time; the records may or may not be stored")
    except UnknownTopicError:
        return _topic_not_found(topic)
    except Exception as exc:  # every failure of the log is a 503, never a 2xx or a bare 500
        return _log_failed(exc)
    body = b"".join(
        [
            b'{"offsets":[',
            b",".join(b'{"partition":%d,"offset":%d,"error_code":null,"error":null}' % po for po in placed),
            b'],"key_schema_id":null,"value_schema_id":null}',
        ]
    )
    return Answer(200, RESPONSE_TYPE, body, None)


@router.get(
    "/topics",
    summary="List topics",
    responses={200: {"content": {RESPONSE_TYPE: {"schema": {"type": "array", "items": {"type": "string"}}}}}},
)
async def list_topics(request: Request) -> Response:
    state = state_of(request)
    return json_response(200, sorted(state.rest_topics), RESPONSE_TYPE)


@router.get("/topics/{topic}", summary="Describe a topic", responses=_err_responses(404, 503))
async def describe_topic(topic: str, request: Request) -> Response:
    state = state_of(request)
    if topic not in state.rest_topics:
        return to_response(_topic_not_found(topic))
    loop = asyncio.get_running_loop()
    try:
        known = await asyncio.wait_for(loop.run_in_executor(state.executor, state.log.topics), 5.0)
    except TimeoutError:
        return to_response(_log_failed("the event log did not answer in time"))
    except Exception as exc:  # the log is down: say so, never describe the topic from settings with a 200
        return to_response(_log_failed(exc))
    partitions = known.get(topic, state.settings.log.partitions)
    replica = [{"broker": 0, "leader": True, "in_sync": True}]
    doc = {
        "name": topic,
        "configs": {},
        "partitions": [{"partition": p, "leader": 0, "replicas": replica} for p in range(partitions)],
    }
    return json_response(200, doc, RESPONSE_TYPE)
