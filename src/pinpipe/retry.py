"""The one retry policy of pinpipe: which errors are retried, how often, and for how long.

Every retry in the project goes through :func:`attempts` or :func:`retrying` with one of the named
:class:`Policy` values below — no hand-written loop. Only :class:`~pinpipe.errors.RetryableError` subclasses are
ever retried (a bug or a fatal error fails at once), with exponential backoff and jitter, bounded both by a
number of attempts and by a total time, after which the last error is raised unchanged.

Built on `stamina <https://stamina.hynek.me>`_ (over tenacity). stamina was chosen over plain tenacity because
its one call takes exactly the knobs a policy needs (the exceptions to retry — no default "retry everything" —,
attempts, a total timeout, jittered exponential backoff), it has a loop form (:func:`stamina.retry_context`) for
code that must keep state between attempts, and retry hooks for logs and metrics; tenacity's general
combinators (stop/wait/retry objects assembled per call) are what let five loops drift apart before.

Each retry is logged once through pinpipe's logging (``retrying`` with the call's name, attempt, wait and error)
and counted in ``pinpipe_retries_total{call}``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import stamina
import stamina.instrumentation

from pinpipe.errors import CommitConflictError, LogUnavailableError, RetryableError, StoreUnavailableError
from pinpipe.telemetry.logs import get_logger

if TYPE_CHECKING:
    from prometheus_client import Counter

P = ParamSpec("P")
T = TypeVar("T")

log = get_logger("retry")


_counter: list[Counter] = []
_counter_lock = threading.Lock()


def retries_counter() -> Counter:
    """``pinpipe_retries_total{call}`` (prometheus_client's default registry), made at the first retry: a command
    that never retries (a batch run) does not import prometheus_client."""
    with _counter_lock:
        if not _counter:
            from prometheus_client import Counter

            _counter.append(Counter("pinpipe_retries", "Calls retried after a retryable error, by call name", ["call"]))
        return _counter[0]


@dataclass(frozen=True)
class Policy:
    """How one kind of call is retried. ``timeout_s`` bounds the whole call including waits."""

    on: type[RetryableError] | tuple[type[RetryableError], ...] | Callable[[Exception], bool | float]
    """The errors to retry: RetryableError subclasses, or a hook (which should test for RetryableError) returning
    whether to retry — or the seconds to wait before the retry, overriding the backoff."""
    attempts: int | None
    timeout_s: float | None
    wait_initial_s: float = 0.1
    wait_max_s: float = 5.0
    wait_jitter_s: float = 1.0
    """Up to this much random time is added to each wait."""

    def but(self, **changes: Any) -> Policy:
        """A copy with some knobs changed (``STORE.but(timeout_s=5)`` in a test or a short-lived command)."""
        return replace(self, **changes)


STORE = Policy(on=StoreUnavailableError, attempts=None, timeout_s=120.0)
"""The object store did not answer: keep trying for two minutes (S3 throttling and short outages)."""
LOG = Policy(on=LogUnavailableError, attempts=None, timeout_s=120.0)
"""The event log could not serve or take records: two minutes, as the store."""
COMMIT_RACE = Policy(on=CommitConflictError, attempts=8, timeout_s=60.0, wait_initial_s=0.05, wait_max_s=2.0)
"""A Delta commit lost a race with another writer: re-read and commit again, a few times, quickly."""
STREAM_COMMIT = Policy(
    on=RetryableError, attempts=21, timeout_s=None, wait_initial_s=0.02, wait_max_s=2.0, wait_jitter_s=0.02
)
"""A stream worker's Delta commit (quarantine, then silver): a lost race or a store hiccup, retried 20 times."""
SERVICE = Policy(on=RetryableError, attempts=None, timeout_s=120.0)
"""Any retryable failure of a long-running stage's step (store, log or commit race)."""
PARTIAL_PUT = Policy(on=LogUnavailableError, attempts=5, timeout_s=30.0, wait_initial_s=0.1, wait_max_s=2.0)
"""Kinesis accepted part of a PutRecords call: put the refused records again (only those: the caller narrows
``on`` to its partial-refusal error, so an outage is not retried here)."""
REQUEST = Policy(on=RetryableError, attempts=8, timeout_s=None, wait_initial_s=0.1, wait_max_s=5.0, wait_jitter_s=0.1)
"""An HTTP request to the ingestion API (the emulator): 8 attempts; the caller's ``on`` hook honours
``Retry-After`` by returning its seconds as the wait."""


def attempts(policy: Policy) -> Iterator[stamina.Attempt]:
    """The loop form: ``for attempt in attempts(STORE): with attempt: step()`` — for code keeping state."""
    return iter(_context(policy))


def attempts_async(policy: Policy) -> AsyncIterator[stamina.Attempt]:
    """The loop form for coroutines: ``async for attempt in attempts_async(REQUEST): with attempt: ...``."""
    return aiter(_context(policy))


def _context(policy: Policy) -> Any:
    return stamina.retry_context(**_knobs(policy))


def _knobs(policy: Policy) -> dict[str, Any]:
    """``policy`` as stamina's keyword arguments."""
    return {
        "on": policy.on,
        "attempts": policy.attempts,
        "timeout": policy.timeout_s,
        "wait_initial": policy.wait_initial_s,
        "wait_max": policy.wait_max_s,
        "wait_jitter": policy.wait_jitter_s,
    }


def retrying(policy: Policy) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """The decorator form: ``@retrying(COMMIT_RACE)`` retries the whole function under ``policy``."""
    decorate: Callable[[Callable[P, T]], Callable[P, T]] = stamina.retry(**_knobs(policy))
    return decorate


def call(policy: Policy, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` under ``policy`` (for a call site that is not a function of its own)."""
    return retrying(policy)(fn)(*args, **kwargs)


def _on_retry(details: stamina.instrumentation.RetryDetails) -> None:
    retries_counter().labels(details.name).inc()
    log.warning(
        "retrying",
        extra={
            "fields": {
                "call": details.name,
                "attempt": details.retry_num,
                "wait_s": round(details.wait_for, 2),
                "waited_s": round(details.waited_so_far, 2),
                "error": str(details.caused_by),
                "error_type": type(details.caused_by).__name__,
            }
        },
    )


stamina.instrumentation.set_on_retry_hooks([_on_retry])
