"""The API's wire behaviour through a real ``pinpipe api`` process: body limits enforced while reading, slow
clients timed out, open connections capped, clients that leave mid-body neither errors nor 500s."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import requests

from tests.fixtures.services import free_port, stop_process, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GEO = {"ind": 1, "timestamp": "2020-08-28 03:52:47", "latitude": 1.0, "longitude": 2.0, "country": "X"}
REST = "/topics/0affea73130b.geo"
KINESIS = "/streams/streaming-0affea73130b-geo/record"
KINESIS_BATCH = "/streams/streaming-0affea73130b-geo/records"
KAFKA_JSON = "application/vnd.kafka.json.v2+json"
BODY_TIMEOUT_S = 1.5
CAP = 40
GRACE_S = 2.0  # pinpipe.ingest.serving.GRACE_S: the server closes an unfinished request this long after the timeout


@dataclass
class ApiProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=10).text


@contextlib.contextmanager
def pinpipe_api(
    workdir: Path, *args: str, env: dict[str, str] | None = None, log_format: str = "human"
) -> Iterator[ApiProcess]:
    """``python -m pinpipe api`` on a free loopback port (memory log unless ``--log`` is given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "pinpipe", "--log-format", log_format, "api", "--port", str(port), *args]
    if "--log" not in args:
        argv += ["--log", "memory://"]
    log_path = workdir / f"api-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        wait_for_port(port, 30, proc)  # type: ignore[arg-type]
        yield ApiProcess(proc, port, log_path)
    finally:
        stop_process(proc, timeout=20)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    doc: object
    closed: bool


def read_reply(sock: socket.socket, wait_close_s: float = 2.0) -> Reply:
    """One HTTP response from ``sock``, and whether the server closed the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    sock.settimeout(wait_close_s)
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:  # closed with unread request bytes: the kernel resets
        closed = True
    except TimeoutError:
        closed = False
    return Reply(int(lines[0].split()[1]), headers, orjson.loads(body) if body else None, closed)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def stream_chunked(port: int, method: str, path: str, ctype: str, chunks: Iterable[bytes]) -> tuple[Reply, int]:
    """Send ``chunks`` as a chunked body until the server answers or stops reading; the reply and bytes sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(20)
    sock.sendall(request_head(method, path, {"Content-Type": ctype, "Transfer-Encoding": "chunked"}))
    sent = 0
    with sock:
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        return read_reply(sock), sent


def hundreds_of_mib(mib: int, prefix: bytes) -> Iterator[bytes]:
    yield prefix
    filler = b"x" * (1 << 20)
    for _ in range(mib):
        yield filler


class RssWatch:
    """The largest VmRSS of a process seen while the block runs (sampled every 5 ms)."""

    def __init__(self, api: ApiProcess) -> None:
        self.api = api
        self.peak_kb = api.rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_kb = max(self.peak_kb, self.api.rss_kb())

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.api.rss_kb())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    env = {"PINPIPE__API__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "PINPIPE__API__MAX_CONNECTIONS": str(CAP)}
    with pinpipe_api(tmp_path_factory.mktemp("wire"), env=env) as server:
        yield server
    output = server.output()
    assert "Exception in ASGI application" not in output and "Traceback" not in output, output


@pytest.mark.parametrize(
    ("method", "path", "ctype", "prefix", "status", "shape"),
    [
        ("PUT", KINESIS, "application/json", b'{"PartitionKey":"p","Data":{"ind":1,"country":"', 400, "__type"),
        ("PUT", KINESIS_BATCH, "application/json", b'{"Records":[{"PartitionKey":"p","Data":"', 400, "__type"),
        ("POST", REST, KAFKA_JSON, b'{"records":[{"value":{"ind":1,"country":"', 413, "error_code"),
    ],
)
def test_a_300_mib_chunked_body_is_refused_while_it_is_read(
    api: ApiProcess, method: str, path: str, ctype: str, prefix: bytes, status: int, shape: str
) -> None:
    warm = requests.put(f"{api.url}{KINESIS}", json={"Data": GEO, "PartitionKey": "p"}, timeout=10)
    assert warm.status_code == 200
    with RssWatch(api) as rss:
        before_kb = rss.peak_kb
        reply, sent = stream_chunked(api.port, method, path, ctype, hundreds_of_mib(300, prefix))
    print(f"sent {sent >> 20} MiB; API RSS +{(rss.peak_kb - before_kb) // 1024} MB")
    assert reply.status == status, reply
    assert isinstance(reply.doc, dict) and shape in reply.doc, reply.doc
    if shape == "__type":
        assert reply.doc["__type"] == "ValidationException" and "5242880 bytes" in reply.doc["message"]
    assert rss.peak_kb - before_kb < 16 * 1024, f"API RSS grew by {(rss.peak_kb - before_kb) // 1024} MB"
    assert sent < 64 << 20, f"the client could send {sent >> 20} MiB before the refusal"
    assert reply.closed, "the server must close a connection whose body it stopped reading"


@pytest.mark.parametrize(
    ("method", "path", "ctype", "check"),
    [
        ("POST", REST, KAFKA_JSON, lambda doc: doc["error_code"] == 40801),
        ("PUT", KINESIS, "application/json", lambda doc: doc["__type"] == "RequestTimeoutException"),
    ],
)
def test_a_slow_body_is_answered_408_at_the_timeout_and_closed(
    api: ApiProcess, method: str, path: str, ctype: str, check: object
) -> None:
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.settimeout(BODY_TIMEOUT_S + GRACE_S + 5)
        sock.sendall(request_head(method, path, {"Content-Type": ctype, "Content-Length": "1000"}) + b'{"rec')
        started = time.monotonic()
        reply = read_reply(sock)
        waited = time.monotonic() - started
    assert reply.status == 408 and callable(check) and check(reply.doc), reply
    assert BODY_TIMEOUT_S - 0.1 <= waited < BODY_TIMEOUT_S + 1.5, waited
    assert reply.closed


def test_slow_headers_and_silent_connections_are_closed(api: ApiProcess) -> None:
    with (
        socket.create_connection(("127.0.0.1", api.port)) as silent,
        socket.create_connection(("127.0.0.1", api.port)) as slow,
    ):
        slow.sendall(b"POST /topics/0affea73130b.geo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        for sock in (silent, slow):
            sock.settimeout(BODY_TIMEOUT_S + GRACE_S + 5)
            assert sock.recv(1024) == b""  # closed by the server, without an answer
        assert time.monotonic() - started < BODY_TIMEOUT_S + GRACE_S + 2


def test_oversized_headers_are_refused(api: ApiProcess) -> None:
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(200):
                sock.sendall(b"X-Padding: " + b"p" * 1000 + b"\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 431 ")


def test_slow_connections_are_capped_and_released(api: ApiProcess) -> None:
    time.sleep(0.3)
    baseline = api.fds()
    socks = [socket.create_connection(("127.0.0.1", api.port)) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(b"PUT /streams/streaming-0affea73130b-geo/record HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.5)
        held = api.fds()
        assert held <= baseline + CAP + 5, f"{held} descriptors with a cap of {CAP} connections (baseline {baseline})"
        refused = 0
        for sock in socks:
            if select.select([sock], [], [], 0)[0]:
                sock.settimeout(2)
                head = sock.recv(1024)
                refused += head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head
        assert refused >= 200 - CAP, refused
        deadline = time.monotonic() + BODY_TIMEOUT_S + GRACE_S + 5
        while api.fds() > baseline + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.fds() <= baseline + 3, "the slow connections were not closed after the timeout"
    finally:
        for sock in socks:
            sock.close()
    assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200
    metrics = api.metrics()
    assert 'pinpipe_api_connections_closed_total{reason="over_cap"}' in metrics
    assert 'pinpipe_api_connections_closed_total{reason="request_timeout"}' in metrics


@pytest.mark.parametrize(
    ("method", "path", "ctype"), [("POST", REST, KAFKA_JSON), ("PUT", KINESIS, "application/json")]
)
def test_a_client_gone_mid_body_is_neither_an_error_nor_a_500(
    api: ApiProcess, method: str, path: str, ctype: str
) -> None:
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(request_head(method, path, {"Content-Type": ctype, "Content-Length": "5000"}) + b'{"records')
        time.sleep(0.2)  # the route is waiting for the rest of the body
    route = "/topics/{topic}" if method == "POST" else "/streams/{stream}/record"
    line = f'pinpipe_api_requests_total{{method="{method}",route="{route}",status="disconnected"}}'
    deadline = time.monotonic() + 5
    while line not in (metrics := api.metrics()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line in metrics, metrics
    assert 'status="500"' not in metrics
    output = api.output()
    assert "client disconnected before sending its whole request" in output
    assert "Exception in ASGI application" not in output and "Traceback" not in output


def test_every_line_of_the_server_is_structured_with_log_format_json(tmp_path: Path) -> None:
    with pinpipe_api(tmp_path, env={"PINPIPE__API__BODY_TIMEOUT_S": "1"}, log_format="json") as api:
        with socket.create_connection(("127.0.0.1", api.port)) as sock:
            sock.settimeout(10)
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 400 ")
        with socket.create_connection(("127.0.0.1", api.port)) as sock:  # a client gone mid-body
            sock.sendall(request_head("POST", REST, {"Content-Type": KAFKA_JSON, "Content-Length": "99"}) + b"{")
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", api.port)) as sock:  # a client that never sends a request
            sock.settimeout(10)
            assert sock.recv(1024) == b""
    lines = [line for line in api.output().splitlines() if line.strip()]
    docs = [orjson.loads(line) for line in lines]  # fails on any line that is not one JSON object
    messages = {doc["msg"] for doc in docs}
    assert "Invalid HTTP request received." in messages
    assert "client disconnected before sending its whole request" in messages
    assert "closed a connection whose request did not arrive in time" in messages
