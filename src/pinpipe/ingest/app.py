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

from pinpipe.config import Settings
from pinpipe.errors import LogUnavailableError
from pinpipe.ingest import auth, kafka_rest, kinesis
from pinpipe.ingest.state import (
    RETRY_AFTER_S,
    Answer,
    ASGIApp,
    Completions,
    IngestState,
    Message,
    Receive,
    Scope,
    Send,
    json_response,
    read_body,
    send_answer,
)
from pinpipe.log import EventLog, open_log
from pinpipe.tables import KINDS, stream_name, topic_name
from pinpipe.telemetry.ingest import ApiMetrics
from pinpipe.telemetry.logs import get_logger

_STAGE_RE = re.compile(r"^/([^/]+)(/(?:topics|streams)(?:/.*)?)$")


log = get_logger("ingest")

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
        head = kafka_rest.check_head(state, topic, content_type.decode("latin-1"), declared.decode("latin-1"))
        if isinstance(head, Answer):
            return head
        body = await read_body(receive, settings.api.max_request_bytes)
        if body is None:
            return kafka_rest.too_large(state)
        return await kafka_rest.produce_body(state, topic, head, body)

    app.add_middleware(IngestMiddleware, metrics=metrics, api_key=api_key, fast_produce=fast_produce)
    return app
