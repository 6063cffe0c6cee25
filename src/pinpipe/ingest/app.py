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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from starlette.requests import ClientDisconnect

from pinpipe.config import Settings
from pinpipe.errors import LogUnavailableError
from pinpipe.ingest import auth, kafka_rest, kinesis
from pinpipe.ingest.state import (
    RETRY_AFTER_S,
    Answer,
    ASGIApp,
    BodyDeadlines,
    Completions,
    IngestState,
    Message,
    Receive,
    Scope,
    Send,
    json_response,
    send_answer,
)
from pinpipe.log import EventLog, open_log
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.tables import KINDS, stream_name, topic_name
from pinpipe.telemetry.ingest import ApiMetrics
from pinpipe.telemetry.logs import get_logger

_STAGE_RE = re.compile(r"^/([^/]+)(/(?:topics|streams|healthz)(?:/.*)?)$")
"""An API-Gateway stage segment before a route (``/test/topics/...``); any stage name is accepted."""


log = get_logger("ingest")

FastProduce = Callable[[Scope, Receive, str], Awaitable[Answer]]


def _strip(path: str, prefix: str) -> str | None:
    if path == prefix:
        return "/"
    if path.startswith(prefix) and path[len(prefix)] == "/":
        return path[len(prefix) :]
    return None


def route_path(path: str, root_path: str) -> str:
    """The path as the routes know it, with and without ``--root-path``.

    uvicorn prepends its ``root_path`` to every request's path, so under ``--root-path /test`` a client's
    ``/topics/x`` arrives as ``/test/topics/x`` and the original clients' ``/test/topics/x`` as
    ``/test/test/topics/x``. Both mean ``/topics/x``: strip the root path once, then a stage segment the client
    sent (the root path again, or any ``/<stage>`` before ``/topics``, ``/streams`` or ``/healthz``).
    """
    if root_path:
        path = _strip(path, root_path) or path
        again = _strip(path, root_path)
        if again is not None:
            return again
    if path.startswith(("/topics/", "/streams/")):
        return path
    match = _STAGE_RE.match(path)
    if match and match.group(1) not in ("topics", "streams"):
        return match.group(2)
    return path


class IngestMiddleware:
    """Pure ASGI middleware: maps the path to the route's (:func:`route_path`), checks the API key (never on
    ``/healthz``: load balancers probe it), records request metrics, answers ``POST /topics/{topic}`` itself
    through ``fast_produce`` (the same function as the FastAPI route, without the framework's per-request routing
    and dependency overhead), and turns a client that went away mid-request into one log line and its own metric
    label (``status="disconnected"``) instead of a 500."""

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
        root_path: str = scope.get("root_path", "").rstrip("/")
        path = route_path(scope["path"], root_path)
        full = root_path + path if root_path else path
        if full != scope["path"]:
            scope["path"] = full
            scope["raw_path"] = full.encode()
        status: list[int | str] = [500]
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
        except ClientDisconnect:
            route = scope.get("route")
            name = getattr(route, "path", None) or name
            status[0] = "disconnected"
            client = scope.get("client") or ("", 0)
            log.info(
                "client disconnected before sending its whole request",
                extra={"fields": {"method": scope["method"], "path": path, "client": f"{client[0]}:{client[1]}"}},
            )
        finally:
            self.metrics.observe_request(name, scope["method"], status[0], time.perf_counter() - started)


class IngestApp(FastAPI):
    """The FastAPI app with :class:`IngestMiddleware` in front of all of it, outside FastAPI's own middleware
    stack (error, telemetry and body-limit layers, each wrapping ``send``): ``POST /topics/{topic}`` is answered
    by the middleware alone, every other request goes on to the framework (:meth:`framework_call`)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await FastAPI.__call__(self, scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def framework_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self, scope, receive, send)


def create_app(settings: Settings, event_log: EventLog | str | None = None) -> FastAPI:
    """The API app over ``event_log`` (an EventLog or URL; default ``settings.log.url``).

    Creates the six topics if missing and, for the embedded log, takes its writer lock, so a second API on the
    same log directory fails here. Raises ConfigError when an API key is required and missing.
    """

    api_key = auth.check_startup(settings)
    owned = not isinstance(event_log, EventLog)
    the_log = open_log(event_log if event_log is not None else settings.log.url)
    if owned and isinstance(the_log, EmbeddedLog):
        the_log.configure(settings.log)  # segments and retention: this process is the log's writer
    rest_topics = {topic_name(settings.prefix, k): k for k in KINDS}
    streams = {stream_name(settings.prefix, k): k for k in KINDS}
    the_log.ensure_topics([*rest_topics, *streams], partitions=settings.log.partitions)
    the_log.append(next(iter(rest_topics)), [])  # an empty append takes the embedded log's writer lock now
    metrics = ApiMetrics()
    executor = ThreadPoolExecutor(64, "pinpipe-append")
    deadlines = BodyDeadlines(settings.api.body_timeout_s)
    state = IngestState(settings, the_log, metrics, executor, rest_topics, streams, Completions(), deadlines)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deadlines.reset()
        log.info("api ready", extra={"fields": {"log": the_log.url, "prefix": settings.prefix}})
        yield
        if owned:  # the executor stays: an app may be started again (tests run one lifespan per client)
            the_log.close()

    app = IngestApp(
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
        problems = await loop.run_in_executor(state.executor, the_log.integrity_problems)
        if problems:  # 200: the log still takes records; readers stop at a corrupt one until it is repaired
            doc = {"status": "degraded", "log": the_log.url, "topics": len(topics), "corrupt": problems[:20]}
            return json_response(200, doc, "application/json")
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
        ctype, length = content_type.decode("latin-1"), declared.decode("latin-1")
        return await kafka_rest.answer_produce(state, topic, ctype, length, receive)

    app.front = IngestMiddleware(app.framework_call, metrics=metrics, api_key=api_key, fast_produce=fast_produce)
    return app
