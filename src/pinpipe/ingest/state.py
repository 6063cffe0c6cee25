"""What the ingestion routes share: :class:`IngestState` (on ``app.state.ingest``), the durable append, and the
:class:`Answer` a route builds before it becomes a response.

Who calls what: :func:`pinpipe.ingest.app.create_app` builds the state; the dialect modules
(:mod:`pinpipe.ingest.kafka_rest`, :mod:`pinpipe.ingest.kinesis`) and the app's fast path call
:func:`append_durably` and the answer helpers. Nothing here imports the app or a dialect.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from pinpipe.config import Settings
from pinpipe.log import EventLog
from pinpipe.tables import Kind
from pinpipe.telemetry.ingest import ApiMetrics

APPEND_TIMEOUT_S = 30.0
"""An append that takes longer is answered with a timeout (408 / 503); its records may still land (at least once)."""
RETRY_AFTER_S = "1"
MAX_RECORD_BYTES = 1024 * 1024
"""Largest record (compact JSON of one value), as Kinesis' 1 MiB and Kafka's default ``max.message.bytes``."""

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
    deadlines: BodyDeadlines


def state_of(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


async def append_durably(
    state: IngestState, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]
) -> list[tuple[int, int]]:
    """Append off the event loop and wait; raises TimeoutError after APPEND_TIMEOUT_S, else what the log raises.

    A log with :attr:`~pinpipe.log.base.Capabilities.group_commit` (the embedded log) hands back a future from
    ``submit``, so waiting costs no thread and many concurrent requests share one fsync; other logs run ``append``
    in the app's thread pool.
    """
    started = time.perf_counter()
    result: list[tuple[int, int]]
    if state.log.capabilities.group_commit:  # its writer always answers (it never waits on a network): no timeout
        result = await state.completions.watch(state.log.submit(topic, values, keys))
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


class BodyTimeout(Exception):
    """A request body did not arrive within ``api.body_timeout_s`` (raised by :func:`read_body`)."""


class BodyDeadlines:
    """When each request body being read must have arrived. One timer every :attr:`SWEEP_S` cancels the overdue
    reads; a timer per request would cost a tenth of what a small request costs. Used by :func:`read_body` (which
    touches :attr:`reads` directly: this runs on every request); the app's lifespan calls :meth:`reset`."""

    SWEEP_S = 0.5

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.reads: dict[asyncio.Task[Any], float] = {}
        """Task reading a body -> its deadline on ``time.monotonic()``."""
        self.timer: asyncio.TimerHandle | None = None
        self._expired: set[asyncio.Task[Any]] = set()

    def reset(self) -> None:
        """Forget the timer of a previous event loop (an app may be served again on another loop)."""
        self.reads.clear()
        self._expired.clear()
        self.timer = None

    def arm(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(self.SWEEP_S, self._sweep)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for being overdue (and forget it)."""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        now = time.monotonic()
        for task in [t for t, deadline in self.reads.items() if deadline <= now]:
            del self.reads[task]
            self._expired.add(task)
            task.cancel()
        self.timer = None
        if self.reads:
            self.arm()


async def read_body(receive: Receive, limit: int, deadlines: BodyDeadlines) -> bytes | None:
    """The whole request body from raw ASGI messages, or None as soon as it exceeds ``limit`` bytes (the rest is
    never read). Raises :class:`BodyTimeout` when it takes longer than ``deadlines.timeout_s`` and starlette's
    ``ClientDisconnect`` when the client goes away first."""
    task = asyncio.current_task()
    assert task is not None  # ASGI apps run in a task
    deadlines.reads[task] = time.monotonic() + deadlines.timeout_s
    if deadlines.timer is None:
        deadlines.arm()
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except asyncio.CancelledError:
        if deadlines.expired(task):
            task.uncancel()
            raise BodyTimeout(f"the request body did not arrive within {deadlines.timeout_s:g} s") from None
        raise
    finally:
        deadlines.reads.pop(task, None)


def json_response(status: int, doc: Any, media_type: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=media_type, headers=headers)
