"""The API-Gateway Kinesis-proxy dialect: ``PUT /streams/{s}/record``, ``PUT /streams/{s}/records``, ``GET /streams``.

Called by clients such as the original's stream emulator (body ``{"StreamName", "Data": {...}, "PartitionKey"}``).
Records go to the log topic named like the stream (``streaming-<prefix>-<kind>``). ``Data`` is the row object
(stored as its compact JSON, as API Gateway's ``$input.json('$.Data')`` does); a string ``Data`` holding JSON
text, or base64 of JSON text, is accepted too. ``StreamName`` in the body is ignored (the path wins).
``PutRecords`` takes ``{"Records":[{"Data","PartitionKey"}]}`` or the tutorial's
``{"records":[{"data","partition-key"}]}``.

Answers, shaped as Kinesis answers through API Gateway:

- 200 ``{"SequenceNumber","ShardId"}`` / ``{"FailedRecordCount":0,"Records":[...]}`` once durable. ``ShardId`` is
  ``shardId-<partition, 12 digits>``; ``SequenceNumber`` is ``"49"`` + partition (6 digits) + offset (20 digits),
  so it grows with the offset and can be decoded back to the log position.
- 400 ``{"__type":"ResourceNotFoundException"}`` for an unknown stream; 400 ``{"__type":"ValidationException"}``
  for a missing/oversized field, more than 500 records, more than 5 MiB, or a record failing ``validate_raw``
  (the message names the record index and the reason); 400 ``{"message":"Could not parse request body into
  json: ..."}`` for a body that is not JSON. One bad record rejects the whole request; nothing is appended.
  The 5 MiB limit is enforced while the body is read: a larger body is refused as soon as it passes the limit,
  the rest is never read and the connection closes.
- 408 ``{"__type":"RequestTimeoutException"}`` when the body does not arrive within ``api.body_timeout_s``.
- 503 ``{"__type":"ServiceUnavailable"}`` with ``Retry-After`` when the log is unavailable or slow; 500
  ``{"__type":"InternalFailure"}`` for any other failure of the log (logged). Never a 2xx.

The record is keyed by its ``ind`` (not by ``PartitionKey``, which the original sends as a constant), so one
``ind`` always lands in one partition.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pinpipe.errors import LogUnavailableError, PinpipeError, UnknownTopicError
from pinpipe.ingest.state import (
    MAX_RECORD_BYTES,
    RETRY_AFTER_S,
    BodyTimeout,
    IngestState,
    append_durably,
    json_response,
    read_body,
    state_of,
)
from pinpipe.ingest.validate import check_record, row_schema
from pinpipe.tables import KINDS, Kind, key_of
from pinpipe.telemetry.logs import get_logger

MAX_RECORDS = 500
MAX_REQUEST_BYTES = 5 * 1024 * 1024
ACCOUNT = "000000000000"
JSON = "application/json"

router = APIRouter(tags=["kinesis-proxy"])
log = get_logger("ingest")
CLOSE = {"Connection": "close"}
"""Headers of an answer sent before the body was read to its end: the rest is not read, so the connection closes."""

_ERROR = {"type": "object", "properties": {"__type": {"type": "string"}, "message": {"type": "string"}}}
_ENTRY = {
    "type": "object",
    "properties": {
        "Data": {"anyOf": [row_schema(k) for k in KINDS]},
        "PartitionKey": {"type": "string", "minLength": 1, "maxLength": 256},
    },
}
_PUT_RECORD = {
    "type": "object",
    "required": ["Data", "PartitionKey"],
    "properties": {"StreamName": {"type": "string"}, **_ENTRY["properties"]},  # type: ignore[dict-item]
}
_PUT_RECORDS = {
    "type": "object",
    "properties": {"StreamName": {"type": "string"}, "Records": {"type": "array", "items": _ENTRY}},
}
_RESULT = {"type": "object", "properties": {"SequenceNumber": {"type": "string"}, "ShardId": {"type": "string"}}}


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"__type": kind, "message": message}, JSON, headers)


def _validation(message: str, headers: dict[str, str] | None = None) -> Response:
    return _error(400, "ValidationException", f"1 validation error detected: {message}", headers)


def _not_found(stream: str) -> Response:
    return _error(400, "ResourceNotFoundException", f"Stream {stream} under account {ACCOUNT} not found.")


def _responses() -> dict[int | str, dict[str, Any]]:
    return {c: {"description": "Kinesis error", "content": {JSON: {"schema": _ERROR}}} for c in (400, 503)}


def sequence_number(partition: int, offset: int) -> str:
    """The Kinesis-style sequence number of a log position (decimal, increasing with the offset)."""
    return f"49{partition:06d}{offset:020d}"


def shard_id(partition: int) -> str:
    return f"shardId-{partition:012d}"


def _row(data: Any) -> Any:
    """The row object of a ``Data`` field: an object as is; a string of JSON text or base64 of JSON text."""
    if not isinstance(data, str):
        return data
    for candidate in (data, None):
        try:
            text = candidate if candidate is not None else base64.b64decode(data, validate=True).decode()
            parsed = orjson.loads(text)
        except (orjson.JSONDecodeError, binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if isinstance(parsed, dict):
            return parsed
    return data


def _prepare(kind: Kind, entries: list[Any]) -> tuple[list[bytes], list[bytes | None]] | Response:
    values: list[bytes] = []
    keys: list[bytes | None] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return _validation(f"Value at 'records.{i + 1}' failed to satisfy constraint: Member must be an object")
        data = entry.get("Data", entry.get("data"))
        pkey = entry.get("PartitionKey", entry.get("partition-key"))
        if data is None:
            return _validation(
                f"Value null at 'records.{i + 1}.member.data' failed to satisfy constraint: Member must not be null"
            )
        if not isinstance(pkey, str) or not 1 <= len(pkey) <= 256:
            return _validation(
                f"Value at 'records.{i + 1}.member.partitionKey' failed to satisfy constraint: "
                "Member must be a string of length 1 to 256"
            )
        row = _row(data)
        reason = check_record(kind, row)
        if reason is not None:
            return _validation(f"Records[{i}].Data rejected: {reason}")
        try:
            blob = orjson.dumps(row)
        except orjson.JSONEncodeError:
            return _validation(f"Records[{i}].Data rejected: not_serialisable")
        if len(blob) + len(pkey.encode()) > MAX_RECORD_BYTES:
            return _validation(
                f"Value at 'records.{i + 1}.member.data' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_RECORD_BYTES}"
            )
        values.append(blob)
        keys.append(str(key_of(kind, row)).encode())
    return values, keys


async def _body(request: Request, state: IngestState) -> Any | Response:
    limit = min(MAX_REQUEST_BYTES, state.settings.api.max_request_bytes)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _validation(f"the request is {declared} bytes; the limit is {limit} bytes", CLOSE)
    try:
        body = await read_body(request.receive, limit, state.deadlines)
    except BodyTimeout as exc:
        return _error(408, "RequestTimeoutException", f"{exc}; send the whole request in time", CLOSE)
    if body is None:
        return _validation(f"the request is larger than the limit of {limit} bytes", CLOSE)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return json_response(400, {"message": f"Could not parse request body into json: {exc}"}, JSON)


async def _append(
    state: IngestState, stream: str, values: list[bytes], keys: list[bytes | None]
) -> list[tuple[int, int]] | Response:
    try:
        return await append_durably(state, stream, values, keys)
    except (TimeoutError, LogUnavailableError) as exc:
        detail = exc.message if isinstance(exc, LogUnavailableError) else "the event log did not answer in time"
        return _error(503, "ServiceUnavailable", detail, {"Retry-After": RETRY_AFTER_S})
    except UnknownTopicError:
        return _not_found(stream)
    except PinpipeError as exc:
        log.error("event log failed", extra={"fields": {"error": exc.message, "type": type(exc).__name__}})
        return _error(500, "InternalFailure", exc.message)
    except Exception as exc:  # a failure of the log is never a 2xx nor an unanswered request
        log.error("event log failed unexpectedly", exc_info=exc)
        return _error(500, "InternalFailure", f"the event log failed: {type(exc).__name__}")


async def _stream_request(stream: str, request: Request) -> tuple[IngestState, Kind, Any] | Response:
    """The state, the stream's kind and the parsed body of a PutRecord(s) request, or the error to answer."""
    state = state_of(request)
    kind = state.streams.get(stream)
    if kind is None:
        return _not_found(stream)
    doc = await _body(request, state)
    if isinstance(doc, Response):
        return doc
    return state, kind, doc


async def _store(state: IngestState, stream: str, kind: Kind, entries: list[Any]) -> list[tuple[int, int]] | Response:
    """Validate every entry and append them all durably; the (partition, offset) of each, or the error to answer
    (a rejected request appends nothing and counts all its records as rejected)."""
    prepared = _prepare(kind, entries)
    if isinstance(prepared, Response):
        state.metrics.record_count(stream, "rejected", len(entries))
        return prepared
    return await _append(state, stream, *prepared)


@router.put(
    "/streams/{stream}/record",
    summary="PutRecord through the API-Gateway Kinesis proxy",
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _PUT_RECORD}}}},
    responses={200: {"description": "record durable", "content": {JSON: {"schema": _RESULT}}}, **_responses()},
)
async def put_record(stream: str, request: Request) -> Response:
    got = await _stream_request(stream, request)
    if isinstance(got, Response):
        return got
    state, kind, doc = got
    if not isinstance(doc, dict):
        return _validation("the request body must be a JSON object")
    placed = await _store(state, stream, kind, [doc])
    if isinstance(placed, Response):
        return placed
    p, o = placed[0]
    return json_response(200, {"SequenceNumber": sequence_number(p, o), "ShardId": shard_id(p)}, JSON)


@router.put(
    "/streams/{stream}/records",
    summary="PutRecords through the API-Gateway Kinesis proxy",
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _PUT_RECORDS}}}},
    responses={200: {"description": "records durable", "content": {JSON: {}}}, **_responses()},
)
async def put_records(stream: str, request: Request) -> Response:
    got = await _stream_request(stream, request)
    if isinstance(got, Response):
        return got
    state, kind, doc = got
    entries = doc.get("Records", doc.get("records")) if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return _validation("Value null at 'records' failed to satisfy constraint: Member must not be null")
    if not 1 <= len(entries) <= MAX_RECORDS:
        return _validation(
            f"Value at 'records' failed to satisfy constraint: Member must have length "
            f"{'greater than or equal to 1' if not entries else f'less than or equal to {MAX_RECORDS}'}"
        )
    placed = await _store(state, stream, kind, entries)
    if isinstance(placed, Response):
        return placed
    results = [{"SequenceNumber": sequence_number(p, o), "ShardId": shard_id(p)} for p, o in placed]
    return json_response(200, {"FailedRecordCount": 0, "Records": results}, JSON)


@router.get("/streams", summary="ListStreams through the API-Gateway Kinesis proxy")
async def list_streams(request: Request) -> Response:
    state = state_of(request)
    return json_response(200, {"HasMoreStreams": False, "StreamNames": sorted(state.streams)}, JSON)
