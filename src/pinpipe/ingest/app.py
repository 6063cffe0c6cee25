"""The ingestion API: a FastAPI app speaking the Kafka REST v2 and the API-Gateway Kinesis dialects.

Who calls what: ``pinpipe api`` (:mod:`pinpipe.cli.ingest_cmd`) and tests call :func:`create_app`; the dialect
routers (:mod:`pinpipe.ingest.kafka_rest`, :mod:`pinpipe.ingest.kinesis`) validate requests and call
:func:`append_durably`, which returns once :meth:`EventLog.append` has returned (records durable).

Topic mapping: the REST dialect writes to log topics ``<prefix>.<kind>``; the Kinesis dialect writes to its own
log topics named like the streams, ``streaming-<prefix>-<kind>``. Both are created at start-up. Keeping them apart
keeps each dialect's offsets and sequence numbers its own, and lets the sink land each stream under its own name,
as the original's two paths did.

Every record is stored as the compact JSON of the value as received (strings such as datetimes untouched), keyed
by ``str(<key column>)`` so one ``ind`` always lands in one partition. One invalid record rejects the whole
request and nothing of it is appended (simplest to account for: a request is all-or-nothing).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from fastapi import FastAPI, Request, Response

from pinpipe.config import Settings
from pinpipe.errors import LogUnavailableError
from pinpipe.ingest import auth
from pinpipe.ingest.metrics import ApiMetrics
from pinpipe.log import EventLog, open_log
from pinpipe.logs import get_logger
from pinpipe.tables import KINDS, Kind, stream_name, topic_name

APPEND_TIMEOUT_S = 30.0
"""An append that takes longer is answered with a timeout (408 / 503); its records may still land (at least once)."""
RETRY_AFTER_S = "1"
MAX_RECORD_BYTES = 1024 * 1024
"""Largest record (compact JSON of one value), as Kinesis' 1 MiB and Kafka's default ``max.message.bytes``."""

log = get_logger("ingest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Completions:
    """Hands results of the log's writer thread to the event loop with one wake-up per batch, not per request
    (``asyncio.wrap_future`` wakes the loop once per future, which costs more than the request itself)."""

    def __init__(self) -> None:
        self._ready: list[tuple[Future[list[tuple[int, int]]], asyncio.Future[list[tuple[int, int]]]]] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def watch(self, done: Future[list[tuple[int, int]]]) -> asyncio.Future[list[tuple[int, int]]]:
        """An asyncio future that completes like ``done`` (called on the event loop)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if done.done():
            self._resolve(done, waiter)
        else:
            done.add_done_callback(lambda f: self._finished(loop, f, waiter))
        return waiter

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        done: Future[list[tuple[int, int]]],
        waiter: asyncio.Future[list[tuple[int, int]]],
    ) -> None:
        with self._lock:
            self._ready.append((done, waiter))
            if self._scheduled:
                return
            self._scheduled = True
        loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._scheduled = False
        for done, waiter in ready:
            self._resolve(done, waiter)

    @staticmethod
    def _resolve(done: Future[list[tuple[int, int]]], waiter: asyncio.Future[list[tuple[int, int]]]) -> None:
        if waiter.done():
            return
        exc = done.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())


@dataclass
class IngestState:
    """What the routes need, on ``app.state.ingest``."""

    settings: Settings
    log: EventLog
    metrics: ApiMetrics
    executor: ThreadPoolExecutor
    rest_topics: dict[str, Kind]
    streams: dict[str, Kind]
    completions: Completions


def state_of(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


async def append_durably(
    state: IngestState, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]
) -> list[tuple[int, int]]:
    """Append off the event loop and wait; raises TimeoutError after APPEND_TIMEOUT_S, else what the log raises.

    A log with a ``submit`` method (the embedded log) hands back a future, so waiting costs no thread and many
    concurrent requests share one fsync; other logs run ``append`` in the app's thread pool.
    """
    started = time.perf_counter()
    submit: Callable[..., Future[list[tuple[int, int]]]] | None = getattr(state.log, "submit", None)
    result: list[tuple[int, int]]
    if submit is not None:  # the embedded writer always answers (it never waits on a network): no timeout
        result = await state.completions.watch(submit(topic, values, keys))
    else:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(APPEND_TIMEOUT_S):
            result = await loop.run_in_executor(state.executor, state.log.append, topic, values, keys)
    state.metrics.append_seconds.observe(time.perf_counter() - started)
    state.metrics.record_count(topic, "accepted", len(values))
    return result


class Answer(NamedTuple):
    """An HTTP answer before it becomes a framework Response (the fast path sends it as raw ASGI messages)."""

    status: int
    media_type: str
    body: bytes
    headers: dict[str, str] | None


def to_response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


async def send_answer(send: Send, answer: Answer) -> None:
    headers = [(b"content-type", answer.media_type.encode()), (b"content-length", b"%d" % len(answer.body))]
    if answer.headers:
        headers.extend((k.lower().encode(), v.encode()) for k, v in answer.headers.items())
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body from raw ASGI messages, or None once it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionResetError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_response(status: int, doc: Any, media_type: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=media_type, headers=headers)


_STAGE_RE = re.compile(r"^/([^/]+)(/(?:topics|streams)(?:/.*)?)$")


FastProduce = Callable[[Scope, Receive, str], Awaitable[Answer]]


class IngestMiddleware:
    """Pure ASGI middleware: strips an API-Gateway stage segment (``/test/topics/...``), checks the API key,
    records request metrics, and answers ``POST /topics/{topic}`` itself through ``fast_produce`` (the same
    functions as the FastAPI route, without the framework's per-request routing and dependency overhead)."""

    def __init__(
        self, app: ASGIApp, metrics: ApiMetrics, api_key: bytes | None, fast_produce: FastProduce | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        self.fast_produce = fast_produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        match = _STAGE_RE.match(path)
        if match and match.group(1) not in ("topics", "streams"):
            path = match.group(2)
            scope["path"] = path
            scope["raw_path"] = path.encode()
        status = [500]
        name = "unmatched"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if path not in auth.OPEN_PATHS and not auth.authorised(self.api_key, scope["headers"]):
                code, ctype, body = auth.refusal(path)
                await send_answer(send_wrapper, Answer(code, ctype.decode(), body, None))
            elif (
                self.fast_produce is not None
                and scope["method"] == "POST"
                and path.startswith("/topics/")
                and "/" not in path[8:]
                and len(path) > 8
            ):
                name = "/topics/{topic}"
                await send_answer(send_wrapper, await self.fast_produce(scope, receive, path[8:]))
            else:
                await self.app(scope, receive, send_wrapper)
                route = scope.get("route")
                name = getattr(route, "path", None) or "unmatched"
        finally:
            self.metrics.observe_request(name, scope["method"], status[0], time.perf_counter() - started)


def create_app(settings: Settings, event_log: EventLog | str | None = None) -> FastAPI:
    """The API app over ``event_log`` (an EventLog or URL; default ``settings.log.url``).

    Creates the six topics if missing and, for the embedded log, takes its writer lock, so a second API on the
    same log directory fails here. Raises ConfigError when an API key is required and missing.
    """
    from pinpipe.ingest import kafka_rest, kinesis

    api_key = auth.check_startup(settings)
    owned = not isinstance(event_log, EventLog)
    the_log = open_log(event_log if event_log is not None else settings.log.url)
    rest_topics = {topic_name(settings.prefix, k): k for k in KINDS}
    streams = {stream_name(settings.prefix, k): k for k in KINDS}
    the_log.ensure_topics([*rest_topics, *streams], partitions=settings.log.partitions)
    the_log.append(next(iter(rest_topics)), [])  # an empty append takes the embedded log's writer lock now
    metrics = ApiMetrics()
    executor = ThreadPoolExecutor(64, "pinpipe-append")
    state = IngestState(settings, the_log, metrics, executor, rest_topics, streams, Completions())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("api ready", extra={"fields": {"log": the_log.url, "prefix": settings.prefix}})
        yield
        if owned:  # the executor stays: an app may be started again (tests run one lifespan per client)
            the_log.close()

    app = FastAPI(
        title="pinpipe ingestion API",
        version="1",
        description="Kafka REST Proxy v2 produce API and API-Gateway Kinesis proxy, backed by a durable event log. "
        "A 2xx means the records are durable. Send `X-API-Key` when the server requires it.",
        lifespan=lifespan,
    )
    app.state.ingest = state
    app.include_router(kafka_rest.router)
    app.include_router(kinesis.router)
    plain_openapi = app.openapi

    def openapi_with_names() -> dict[str, Any]:
        """The schema, with this server's topic and stream names as the allowed path values."""
        schema = plain_openapi()
        names = {"topic": sorted(rest_topics), "stream": sorted(streams)}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for param in operation.get("parameters", []):
                    if param.get("in") == "path" and param.get("name") in names:
                        param.setdefault("schema", {})["enum"] = names[param["name"]]
        return schema

    app.openapi = openapi_with_names  # type: ignore[method-assign]

    @app.get("/healthz", tags=["operations"], summary="Liveness and event-log health")
    async def healthz() -> Response:
        loop = asyncio.get_running_loop()
        try:
            topics = await asyncio.wait_for(loop.run_in_executor(state.executor, the_log.topics), 5.0)
        except (LogUnavailableError, TimeoutError) as exc:
            return json_response(
                503,
                {"status": "unavailable", "log": the_log.url, "error": str(exc)},
                "application/json",
                {"Retry-After": RETRY_AFTER_S},
            )
        return json_response(200, {"status": "ok", "log": the_log.url, "topics": len(topics)}, "application/json")

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def fast_produce(scope: Scope, receive: Receive, topic: str) -> Answer:
        content_type = declared = b""
        for header, value in scope["headers"]:
            if header == b"content-type":
                content_type = value
            elif header == b"content-length":
                declared = value
        head = kafka_rest.check_head(state, topic, content_type.decode("latin-1"), declared.decode("latin-1"))
        if isinstance(head, Answer):
            return head
        body = await read_body(receive, settings.api.max_request_bytes)
        if body is None:
            return kafka_rest.too_large(state)
        return await kafka_rest.produce_body(state, topic, head, body)

    app.add_middleware(IngestMiddleware, metrics=metrics, api_key=api_key, fast_produce=fast_produce)
    return app
