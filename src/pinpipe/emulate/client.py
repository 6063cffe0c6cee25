"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for high request rates.

Called by the user emulator (:mod:`pinpipe.emulate.emulator`) and the ingestion benchmark. General-purpose clients
spend more CPU per request than a small server does to answer it (httpx: about 0.85 CPU-seconds per wall second
at 350 requests/s), so load would measure the client. This one writes a prepared request and reads
``Content-Length``-framed or chunked answers on one connection; ``https://`` URLs go through httpx instead.
Transport failures raise :class:`~pinpipe.errors.ApiUnavailableError` (the caller retries under
:data:`pinpipe.retry.REQUEST`); nothing here knows about pinpipe's APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from pinpipe.errors import ConfigError, map_exceptions


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses a client retries (timeouts, throttling, server errors); any other answer is final."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpConnection:
    """One keep-alive connection to ``base_url`` (``http://host:port[/prefix]``); not shared between tasks."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._host_header = parts.netloc.encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._httpx: httpx.AsyncClient | None = None
        if self.scheme == "https":
            self._httpx = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        elif self.scheme != "http":
            raise ConfigError(f"unsupported URL scheme in {base_url!r}", hint="use http:// or https://")

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> HttpAnswer:
        """Send one request and read its answer; a transport failure drops the connection and raises
        :class:`~pinpipe.errors.ApiUnavailableError` (the rules are ``errors.FOREIGN_ERRORS["http"]``)."""
        what = f"{method} {self.prefix}{path} to {self.host}:{self.port} got no answer"
        with map_exceptions("http", what, detail=_describe):
            if self._httpx is not None:
                resp = await self._httpx.request(method, path, headers=headers, content=body)
                return HttpAnswer(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self._exchange(method, path, headers, body)
            except BaseException:
                await self.close()
                raise

    async def _exchange(self, method: str, path: str, headers: dict[str, str], body: bytes) -> HttpAnswer:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {self.prefix}{path} HTTP/1.1".encode(), b"Host: " + self._host_header]
        head.extend(f"{k}: {v}".encode() for k, v in headers.items())
        head.append(b"Content-Length: %d" % len(body))
        self._writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        reader = self._reader
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n"))[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        answer_headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        if answer_headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            data = b"".join(chunks)
        else:
            data = await reader.readexactly(int(answer_headers.get("content-length", "0")))
        if answer_headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpAnswer(status, answer_headers, data)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._httpx is not None:
            await self._httpx.aclose()
