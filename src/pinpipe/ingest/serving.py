"""Serving the ingestion API under uvicorn: the listening socket bound first, client connections guarded, the
cyclic garbage collector tuned for request traffic.

Who calls what: ``pinpipe api`` (:mod:`pinpipe.cli.ingest_cmd`) calls :func:`bind` (a port in use is a
ConfigError, before anything reports ready), then :func:`serve`; ``bench/ingest.py`` calls
:func:`bind`, :func:`tune_gc_for_serving` and :func:`uvicorn_config` for its baseline. Tests do not call these in process: they change the whole process.

Connections (uvicorn has no limit on open connections and no timer before a request's last byte, so one slow
client holds a descriptor for as long as it trickles, and a thousand hold a thousand):

- at most ``api.max_connections`` are open; one more is answered 503 at once and closed (uvicorn's own
  ``limit_concurrency`` answers 503 only once a request has arrived, holding the connection until then);
- a request must arrive whole within ``api.body_timeout_s`` (+ :data:`GRACE_S`) of its first byte, or of the
  connection's opening; otherwise the connection is closed. The routes answer a slow body themselves at
  ``api.body_timeout_s`` (408), so this closes what no route reads: slow headers, an unread body;
- request headers larger than :data:`MAX_HEADER_BYTES` are answered 431 and the connection is closed.

Deadlines are checked by one timer per second over the open connections, not a timer per request (that would
cost about a twentieth of a small request).

Why tune the collector: a 100-record request parses into about a hundred dicts. With the default threshold (a
young-generation collection every 700 new containers) the collector runs every few requests, each time traversing
the requests in flight, and promotes them so that full collections — which walk every object of the loaded app
(tens of thousands: FastAPI, pydantic, prometheus) — follow often. Measured with ``bench/ingest.py``, that was
about a tenth of the server's CPU. Request objects are freed by reference counting as soon as a request is
answered, so collecting less often finds no more garbage; freezing what start-up created takes it out of every
collection.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pinpipe.config import Settings
from pinpipe.errors import ConfigError
from pinpipe.telemetry.ingest import ApiMetrics
from pinpipe.telemetry.logs import get_logger

YOUNG_THRESHOLD = 50_000
"""New containers between young-generation collections (CPython's default is 700)."""
GRACE_S = 2.0
"""Seconds past ``api.body_timeout_s`` before a connection whose request has not arrived is closed."""
MAX_HEADER_BYTES = 64 * 1024
SWEEP_S = 1.0
BACKLOG = 2048

log = get_logger("ingest")


def _plain_answer(status: bytes, message: bytes, extra: bytes = b"") -> bytes:
    body = b'{"message":"' + message + b'"}'
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n",
            extra,
            b"content-length: %d\r\n\r\n" % len(body),
            body,
        ]
    )


def tune_gc_for_serving() -> None:
    """Freeze everything built so far (the app, its schemas, imported modules) out of future collections and
    collect the young generation less often. Call once per process, just before serving."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); ConfigError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {host}:{port}: the port is already in use",
                hint=f"stop the process listening there (`ss -ltnp 'sport = :{port}'` shows it) "
                "or choose another port with --port",
                host=host,
                port=port,
            ) from exc
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="--host must be an address of this machine; ports below 1024 need privileges (choose another "
            "with --port)",
            host=host,
            port=port,
        ) from exc
    return sock


def guarded_protocol(max_connections: int, request_timeout_s: float, metrics: ApiMetrics) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the connection cap, the request deadline and the header limit above."""
    busy = _plain_answer(
        b"503 Service Unavailable",
        b"the server has too many open connections; retry later",
        b"retry-after: 1\r\n",
    )
    too_large = _plain_answer(b"431 Request Header Fields Too Large", b"request headers are too large")
    sweeper: dict[str, asyncio.TimerHandle | None] = {"timer": None}

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: float | None = None
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self.transport = transport  # connection_lost closes it again
                transport.write(busy)
                transport.close()
                metrics.connections_closed.labels("over_cap").inc()
                return
            HttpToolsProtocol.connection_made(self, transport)
            self._deadline = self.loop.time() + request_timeout_s
            if sweeper["timer"] is None:
                sweeper["timer"] = self.loop.call_later(SWEEP_S, self._sweep)

        def data_received(self, data: bytes) -> None:
            HttpToolsProtocol.data_received(self, data)
            # a request has begun and its headers are not complete yet (the cycle is made when they are):
            # every byte of this chunk was header bytes
            if self._deadline is not None and (self.cycle is None or self.cycle.scope is not self.scope):
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                    self.transport.write(too_large)
                    self.transport.close()
                    metrics.connections_closed.labels("headers_too_large").inc()

        def on_message_begin(self) -> None:
            HttpToolsProtocol.on_message_begin(self)
            self._deadline = self.loop.time() + request_timeout_s
            self._header_bytes = 0

        def on_message_complete(self) -> None:
            HttpToolsProtocol.on_message_complete(self)
            self._deadline = None

        def _sweep(self) -> None:
            now = self.loop.time()
            for conn in list(self.connections):
                deadline: Any = getattr(conn, "_deadline", None)
                if deadline is not None and deadline <= now and isinstance(conn, GuardedHttpToolsProtocol):
                    conn._expire()
            sweeper["timer"] = self.loop.call_later(SWEEP_S, self._sweep) if self.connections else None

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            client = self.client or ("", 0)
            log.info(
                "closed a connection whose request did not arrive in time",
                extra={"fields": {"client": f"{client[0]}:{client[1]}", "timeout_s": request_timeout_s}},
            )
            metrics.connections_closed.labels("request_timeout").inc()
            self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_config(app: Any, settings: Settings, metrics: ApiMetrics) -> uvicorn.Config:
    """How ``pinpipe api`` runs under uvicorn (one process, uvloop, the guarded httptools protocol); also used
    by ``bench/ingest.py`` to serve its raw ASGI baseline exactly alike."""
    api = settings.api
    return uvicorn.Config(
        app,
        root_path=api.root_path,
        loop="uvloop",
        http=guarded_protocol(api.max_connections, api.body_timeout_s + GRACE_S, metrics),
        access_log=False,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=10,
        backlog=BACKLOG,
    )


def serve(app: FastAPI, settings: Settings, sock: socket.socket) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGTERM/SIGINT (uvicorn + uvloop, one process). uvicorn's own
    warnings (a malformed request, say) go through pinpipe's log handlers, so ``--log-format json`` holds for
    every line."""
    config = uvicorn_config(app, settings, app.state.ingest.metrics)
    server_log = logging.getLogger("uvicorn")
    server_log.handlers[:] = logging.getLogger("pinpipe").handlers
    server_log.propagate = False
    uvicorn.Server(config).run(sockets=[sock])
