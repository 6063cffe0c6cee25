"""The user emulator: picks rows from the source database as the original did and sends them to the ingestion API.

Called by ``pinpipe emulate`` (:mod:`pinpipe.cli.ingest_cmd`); tests call :func:`emulate` directly.

**Selection** (the original's, reproduced): ``rng = random.Random(seed)``; per selection the original slept
``rng.randrange(0, 2)`` seconds, then drew ``n = rng.randint(0, 11000)`` and read ``LIMIT n, 1`` from each of the
three tables — the same offset into all three, so the three records describe one post. Both draws are made here
in the same order (the sleep value is drawn and not slept; ``--rate`` paces instead), so seed 100 yields the
original's offsets. A table smaller than 11,001 rows would return nothing for large offsets; here the offset is
taken modulo the smallest of the three row counts (a no-op on the real 11,154-row tables). Rows come from
:func:`pinpipe.source.database.read_row` (ordered by key), each offset read once and cached.

**Requests** are byte-compatible with the original's: ``json.dumps(payload, default=str)`` (so datetimes become
``2020-08-28 03:52:47``), batch → ``POST /topics/<prefix>.<kind>`` with ``Content-Type:
application/vnd.kafka.json.v2+json`` and ``{"records": [{"value": row}]}``; stream → ``PUT
/streams/streaming-<prefix>-<kind>/record`` with ``Content-Type: application/json`` and ``{"StreamName": ...,
"Data": row, "PartitionKey": "partition-1"}``. With ``records_per_request`` K > 1, K consecutive selections go in
one request per kind (``/records`` with ``{"StreamName", "Records": [...]}`` for the stream dialect).

**Checks before sending** (:mod:`pinpipe.emulate.preflight`: the options, then the source, then the API): every option is validated
(ConfigError, exit 2, naming the flag); a SQLite file or source tables that do not exist are
:class:`~pinpipe.errors.NotFoundError` (hint: ``pinpipe source init``; nothing is created); an API that does not
answer at all is a :class:`~pinpipe.errors.RetryableError` (exit 75) naming its URL — before any record is sent.

**Retries**: 408, 429, 5xx, timeouts and connection failures are retried with exponential backoff (honouring
``Retry-After``) up to ``max_attempts``, with one warning line the first time the API does not answer; once a
request has failed that way on every attempt, nothing more is sent (the rest count as ``requests_not_sent``);
other 4xx answers are final (the records were rejected). :meth:`EmulateSummary.failure` turns failed requests into the
error the command exits with (retryable when the API was unavailable, InvalidInputError when it rejected).

**Send log** (JSONL, one object per line, for accounting): every attempt writes
``{"ts","event":"sent","request_id","attempt","kind","topic","inds"}``; then either
``{"ts","event":"acked","request_id","attempt","kind","topic","status","records":[{"ind","partition","offset"}]}``
(stream dialect: also ``"shard_id"`` and ``"sequence_number"`` per record; partition/offset are decoded from them
when the API is pinpipe's) or ``{"ts","event":"error","request_id","attempt","kind","topic","status","error",
"final"}``. ``topic`` is the event-log topic (the REST topic or the stream name).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import uvloop

from pinpipe import retry
from pinpipe.config import DEFAULT_PREFIX
from pinpipe.emulate.client import RETRY_STATUSES, HttpConnection
from pinpipe.emulate.preflight import check_options, check_source, probe_api
from pinpipe.emulate.sendlog import SendLog, positions
from pinpipe.errors import (
    ApiUnavailableError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    PinpipeError,
    RetryableError,
)
from pinpipe.source.database import count_rows, create_source_engine, existing_tables, read_row, redact, source_errors
from pinpipe.tables import KINDS, RAW_TABLES, Kind, stream_name, topic_name
from pinpipe.telemetry.logs import get_logger

Dialect = Literal["batch", "stream"]
MAX_OFFSET = 11000
KAFKA_JSON = "application/vnd.kafka.json.v2+json"
log = get_logger("emulate")


@dataclass(frozen=True)
class EmulateOptions:
    dialect: Dialect
    api: str
    db_url: str
    count: int = 100
    rate: float = 0.0
    """Requests per second at most (0: as fast as the API answers)."""
    seed: int = 100
    concurrency: int = 8
    records_per_request: int = 1
    send_log: Path | None = None
    prefix: str = DEFAULT_PREFIX
    api_key: str | None = None
    timeout_s: float = 30.0
    max_attempts: int = 8


@dataclass
class EmulateSummary:
    selections: int = 0
    requests: int = 0
    requests_failed: int = 0
    records_acked: int = 0
    records_rejected: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    api: str = ""
    unavailable: int = 0
    """Requests that failed because the API did not answer or answered 408/429/5xx on every attempt."""
    not_sent: int = 0
    """Requests never sent because an earlier one found the API unavailable on every attempt."""
    last_error: str | None = None
    last_rejection: str | None = None

    def failure(self) -> PinpipeError | None:
        """The error a failed run exits with, or None when every request was acknowledged."""
        if not self.requests_failed:
            return None
        rejected = self.requests_failed - self.unavailable
        if self.unavailable:
            return RetryableError(
                f"{self.unavailable} of {self.requests} requests to the API at {self.api} failed on every attempt"
                + (f" ({rejected} more were rejected)" if rejected else "")
                + (f" and {self.not_sent} were not sent" if self.not_sent else "")
                + f"; last error: {self.last_error}",
                hint="check that `pinpipe api` is running and healthy there, then run the emulator again "
                "(the send log records every attempt)",
                api=self.api,
            )
        return InvalidInputError(
            f"the API at {self.api} rejected {rejected} of {self.requests} requests "
            f"({self.records_rejected} records); last answer: {self.last_rejection}",
            hint="check --dialect, the topic prefix and --api-key; the send log records each answer",
            api=self.api,
        )

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else (lambda q: None)
        return {
            "selections": self.selections,
            "requests": self.requests,
            "requests_failed": self.requests_failed,
            "requests_not_sent": self.not_sent,
            "records_acked": self.records_acked,
            "records_rejected": self.records_rejected,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.records_acked / self.elapsed_s, 1) if self.elapsed_s else None,
            "latency_p50_ms": pick(0.5),
            "latency_p99_ms": pick(0.99),
        }


def select_offsets(seed: int, count: int, smallest_table: int) -> list[int]:
    """The offsets the original emulator would read, ``count`` of them, folded into the smallest table."""
    if smallest_table <= 0:
        raise ConfigError("the source tables are empty", hint="load data first: pinpipe source init")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        rng.randrange(0, 2)  # the original's sleep draw, kept so the sequence matches
        out.append(rng.randint(0, MAX_OFFSET) % smallest_table)
    return out


class RowSource:
    """Rows by (kind, offset) from the source database, each read once (``read_row``, ordered by key)."""

    def __init__(self, db_url: str) -> None:

        self.engine = create_source_engine(db_url)
        self._cache: dict[tuple[Kind, int], dict[str, Any]] = {}

    def smallest_table(self) -> int:

        with source_errors(self.engine), self.engine.connect() as conn:
            missing = sorted({RAW_TABLES[kind].name for kind in KINDS} - existing_tables(conn))
            if missing:
                raise NotFoundError(
                    f"the source database {redact(self.engine.url)} has no table {', '.join(missing)}",
                    hint="create and load the tables first: pinpipe source init",
                )
            return min(count_rows(conn, kind) for kind in KINDS)

    def rows(self, offsets: list[int]) -> dict[tuple[Kind, int], dict[str, Any]]:

        missing = sorted({o for o in offsets if ("pin", o) not in self._cache})
        with source_errors(self.engine), self.engine.connect() as conn:
            for offset in missing:
                for kind in KINDS:
                    row = read_row(conn, kind, offset)
                    if row is None:
                        raise ConfigError(f"source table {RAW_TABLES[kind].name} has no row at offset {offset}")
                    self._cache[(kind, offset)] = row
        return self._cache


@dataclass
class _Request:
    kind: Kind
    topic: str
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    inds: list[int]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


def build_requests(opts: EmulateOptions, selected: list[dict[Kind, dict[str, Any]]]) -> list[_Request]:
    """The requests for the selected rows, in send order (per group of K selections: pin, geo, user)."""
    extra = {"X-API-Key": opts.api_key} if opts.api_key else {}
    out: list[_Request] = []
    k = max(1, opts.records_per_request)
    for start in range(0, len(selected), k):
        group = selected[start : start + k]
        for kind in KINDS:
            rows = [sel[kind] for sel in group]
            inds = [int(r[RAW_TABLES[kind].key]) for r in rows]
            if opts.dialect == "batch":
                topic = topic_name(opts.prefix, kind)
                payload: dict[str, Any] = {"records": [{"value": r} for r in rows]}
                body = json.dumps(payload, default=str).encode()
                out.append(
                    _Request(kind, topic, f"/topics/{topic}", "POST", {"Content-Type": KAFKA_JSON, **extra}, body, inds)
                )
                continue
            stream = stream_name(opts.prefix, kind)
            if len(rows) == 1:
                payload = {"StreamName": stream, "Data": rows[0], "PartitionKey": "partition-1"}
                path = f"/streams/{stream}/record"
            else:
                payload = {"StreamName": stream, "Records": [{"Data": r, "PartitionKey": "partition-1"} for r in rows]}
                path = f"/streams/{stream}/records"
            body = json.dumps(payload, default=str).encode()
            out.append(_Request(kind, stream, path, "PUT", {"Content-Type": "application/json", **extra}, body, inds))
    return out


async def _send_all(
    opts: EmulateOptions,
    requests: list[_Request],
    summary: EmulateSummary,
    sendlog: SendLog,
    progress: Callable[[int], None],
) -> None:
    queue: asyncio.Queue[tuple[int, _Request]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)
    started = time.monotonic()
    policy = retry.REQUEST.but(attempts=opts.max_attempts, on=_wait_for)

    async def worker() -> None:
        conn = HttpConnection(opts.api, opts.timeout_s)
        try:
            while not queue.empty() and not summary.unavailable:  # once the API failed for good, stop sending
                index, req = queue.get_nowait()
                if opts.rate > 0:
                    delay = started + index / opts.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await _send_one(opts, conn, req, summary, sendlog, policy)
                progress(len(req.inds))
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, opts.concurrency))))


class _NotAnswered(RetryableError):
    """This attempt got no answer, or a 408/429/5xx one: try again (after ``retry_after`` seconds if the API
    said so)."""

    def __init__(self, error: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(error, status=status)
        self.status = status
        self.retry_after = retry_after


def _wait_for(exc: Exception) -> bool | float:
    """The retry hook: retry an unanswered attempt, after the API's ``Retry-After`` when it sent one."""
    if not isinstance(exc, _NotAnswered):
        return False
    return exc.retry_after if exc.retry_after is not None else True


async def _send_one(
    opts: EmulateOptions,
    conn: HttpConnection,
    req: _Request,
    summary: EmulateSummary,
    sendlog: SendLog,
    policy: retry.Policy,
) -> None:
    """Send one request under ``policy`` (:data:`pinpipe.retry.REQUEST` with ``opts.max_attempts`` attempts),
    writing each attempt to the send log; a final failure is counted in ``summary``, never raised.

    The first attempt is made directly (a retry context per request cost more than the request itself); only
    when it goes unanswered does the policy take over, its first attempt replaying that failure, so the waits
    before each retry and the attempt count are the policy's, as if it had run the first attempt itself."""
    summary.requests += 1
    try:
        await _attempt(opts, conn, req, summary, sendlog, 1)
        return
    except _NotAnswered as exc:
        unanswered: _NotAnswered | None = exc
    attempt_no = 1
    try:
        async for attempt in retry.attempts_async(policy):
            with attempt:
                if unanswered is not None:
                    first, unanswered = unanswered, None
                    raise first
                attempt_no += 1
                summary.retries += 1
                await _attempt(opts, conn, req, summary, sendlog, attempt_no)
                return
    except _NotAnswered:  # every attempt went unanswered
        summary.requests_failed += 1
        summary.unavailable += 1


async def _attempt(
    opts: EmulateOptions, conn: HttpConnection, req: _Request, summary: EmulateSummary, sendlog: SendLog, n: int
) -> None:
    """One attempt: returns when it was answered (acknowledged, or rejected for good); raises _NotAnswered."""
    sendlog.write("sent", req, n, inds=req.inds)
    t0 = time.perf_counter()
    status: int | None = None
    retry_after: str | None = None
    try:
        answer = await conn.request(req.method, req.path, req.headers, req.body)
        status = answer.status
        if 200 <= status < 300:
            summary.latencies_ms.append((time.perf_counter() - t0) * 1000)
            records = positions(opts.dialect, req.inds, orjson.loads(answer.body))
            sendlog.write("acked", req, n, status=status, records=records)
            summary.records_acked += len(req.inds)
            return
        error = answer.body[:500].decode(errors="replace")
        retry_after = answer.headers.get("retry-after")
    except ApiUnavailableError as exc:
        error = exc.message
        if summary.last_error is None:
            log.warning("the API does not answer; retrying", extra={"fields": {"api": opts.api, "error": error}})
    retryable = status is None or status in RETRY_STATUSES
    final = not retryable or n == opts.max_attempts
    sendlog.write("error", req, n, status=status, error=error, final=final)
    if not retryable:  # rejected: a final answer
        summary.requests_failed += 1
        summary.records_rejected += len(req.inds)
        summary.last_rejection = f"HTTP {status}: {error[:200]}"
        return
    summary.last_error = error if status is None else f"HTTP {status}: {error[:200]}"
    wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    raise _NotAnswered(error, status, wait)


def emulate(opts: EmulateOptions, progress: Callable[[int], None] | None = None) -> EmulateSummary:
    """Select ``opts.count`` rows per table, send them, and return the summary. Before sending anything it raises
    ConfigError for a bad option, NotFoundError for a missing source, SourceUnavailableError for a database that
    does not answer and RetryableError for an API that does not answer (see the module docstring)."""
    check_options(opts)
    check_source(opts.db_url)
    source = RowSource(opts.db_url)
    offsets = select_offsets(opts.seed, opts.count, source.smallest_table())
    rows = source.rows(offsets)
    selected = [{kind: rows[(kind, o)] for kind in KINDS} for o in offsets]
    requests = build_requests(opts, selected)
    summary = EmulateSummary(selections=len(offsets), api=opts.api)
    if requests:
        asyncio.run(probe_api(opts.api, opts.timeout_s))
    sendlog = SendLog(opts.send_log)
    started = time.perf_counter()
    try:
        uvloop.run(_send_all(opts, requests, summary, sendlog, progress or (lambda n: None)))
    finally:
        sendlog.close()
        summary.elapsed_s = time.perf_counter() - started
        summary.not_sent = len(requests) - summary.requests
    return summary
