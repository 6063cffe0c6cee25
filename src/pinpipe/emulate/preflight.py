"""Checks the user emulator makes before it sends anything: its options, its source database, the API.

Called by :func:`pinpipe.emulate.emulator.emulate` (so ``pinpipe emulate``, the demo and the drill all get them).
A bad option is a ConfigError naming the flag (exit 2); a SQLite file that does not exist is NotFoundError with
the hint ``pinpipe source init`` (the emulator only reads: it never creates one); an API that answers nothing
within :data:`PROBE_S` is a RetryableError naming its URL (exit 75), raised before any record is sent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pinpipe import retry
from pinpipe.emulate.client import HttpConnection
from pinpipe.errors import ApiUnavailableError, ConfigError, NotFoundError, RetryableError
from pinpipe.source.database import parse_url

if TYPE_CHECKING:
    from pinpipe.emulate.emulator import EmulateOptions

MAX_CONCURRENCY = 1024
PROBE_S = 3.0
"""How long the emulator tries to reach the API before it gives up without sending (a server still starting)."""


def check_options(opts: EmulateOptions) -> None:
    """Refuse options that cannot work, naming the flag (ConfigError, exit 2), before anything is done."""

    def bad(flag: str, value: object, why: str, hint: str) -> ConfigError:
        return ConfigError(f"{flag} {value!r} {why}", hint=hint)

    if opts.dialect not in ("batch", "stream"):
        raise bad("--dialect", opts.dialect, "is not a dialect", "use --dialect batch or --dialect stream")
    parts = urlsplit(opts.api)
    example = "e.g. --api http://127.0.0.1:8082 (or http://HOST:PORT/test behind a stage prefix)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("--api", opts.api, "is not an http:// or https:// URL with a host", example)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise bad("--api", opts.api, f"has an invalid port ({exc})", example) from exc
    if parts.query or parts.fragment or parts.username or parts.password:
        raise bad("--api", opts.api, "may not carry a query, a fragment or credentials", example + "; --api-key")
    if opts.count < 0:
        raise bad("--count", opts.count, "is negative", "give the number of selections to send (0 or more)")
    if not math.isfinite(opts.rate) or opts.rate < 0:
        raise bad("--rate", opts.rate, "is not a rate", "give requests per second (0 = as fast as possible)")
    if not 1 <= opts.concurrency <= MAX_CONCURRENCY:
        raise bad("--concurrency", opts.concurrency, f"is outside 1..{MAX_CONCURRENCY}", "e.g. --concurrency 8")
    limit = 500 if opts.dialect == "stream" else 10_000
    if not 1 <= opts.records_per_request <= limit:
        raise bad(
            "--records-per-request",
            opts.records_per_request,
            f"is outside 1..{limit} for the {opts.dialect} dialect",
            "the stream dialect takes at most 500 records per request (the PutRecords limit)"
            if opts.dialect == "stream"
            else "e.g. --records-per-request 50",
        )
    if not (math.isfinite(opts.timeout_s) and opts.timeout_s > 0) or opts.max_attempts < 1:
        raise ConfigError("the request timeout must be > 0 and the attempts >= 1", hint="fix the EmulateOptions")
    if opts.send_log is not None:
        if opts.send_log.is_dir():
            raise bad("--send-log", str(opts.send_log), "is a directory", "give a file name, e.g. sends.jsonl")
        if not opts.send_log.parent.is_dir():
            raise NotFoundError(
                f"--send-log {str(opts.send_log)!r}: the directory {opts.send_log.parent} does not exist",
                hint="create it first or fix the path",
            )


def check_source(db_url: str) -> None:
    """A SQLite source must be an existing file: the emulator only reads it, so it never creates one."""

    parsed = parse_url(db_url)
    database = parsed.database
    local = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if local and not Path(str(database)).is_file():
        raise NotFoundError(
            f"the source database {database} does not exist",
            hint="create and load it first: pinpipe source init (with the same --db)",
            database=str(database),
        )


async def probe_api(api: str, timeout_s: float, within_s: float = PROBE_S) -> None:
    """Raise RetryableError naming ``api`` unless it answers HTTP at all within ``within_s`` (any status will do:
    a request that is answered shows the server is there)."""
    policy = retry.REQUEST.but(
        on=ApiUnavailableError, attempts=None, timeout_s=within_s, wait_initial_s=0.25, wait_max_s=0.25, wait_jitter_s=0
    )
    try:
        async for attempt in retry.attempts_async(policy):
            with attempt:
                conn = HttpConnection(api, min(timeout_s, within_s))
                try:
                    await conn.request("GET", "/healthz", {}, b"")
                finally:
                    await conn.close()
    except ApiUnavailableError as exc:
        raise RetryableError(
            f"cannot reach the API at {api}: {exc.message}",
            hint="start it (`pinpipe api`) or fix --api; nothing was sent",
            api=api,
        ) from exc
