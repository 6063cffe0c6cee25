"""The one retry policy: only retryable errors are retried, within the policy's bounds, each retry logged."""

from __future__ import annotations

import logging

import pytest

from pinpipe import retry
from pinpipe.errors import CommitConflictError, CorruptStateError, StoreUnavailableError

FAST = dict(wait_initial_s=0.001, wait_max_s=0.002)


def _flaky(failures: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "done"

    return calls, fn


def test_a_retryable_error_is_retried_until_the_call_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    calls, fn = _flaky(3, StoreUnavailableError("the store did not answer"))
    with caplog.at_level(logging.WARNING, logger="pinpipe.retry"):
        assert retry.call(retry.STORE.but(**FAST), fn) == "done"
    assert len(calls) == 4
    retried = [r for r in caplog.records if r.getMessage() == "retrying"]
    assert len(retried) == 3 and "the store did not answer" in str(retried[0].__dict__["fields"]["error"])


def test_a_fatal_error_is_never_retried() -> None:
    calls, fn = _flaky(1, CorruptStateError("bad"))
    with pytest.raises(CorruptStateError):
        retry.call(retry.SERVICE.but(**FAST), fn)
    assert len(calls) == 1


def test_an_error_of_another_policy_is_not_retried() -> None:
    calls, fn = _flaky(1, StoreUnavailableError("down"))
    with pytest.raises(StoreUnavailableError):
        retry.call(retry.COMMIT_RACE.but(**FAST), fn)
    assert len(calls) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    calls, fn = _flaky(100, CommitConflictError("lost the race"))
    with pytest.raises(CommitConflictError, match="lost the race"):
        retry.call(retry.COMMIT_RACE.but(**FAST), fn)
    assert len(calls) == retry.COMMIT_RACE.attempts


def test_the_total_time_is_bounded() -> None:
    calls, fn = _flaky(10_000, StoreUnavailableError("down"))
    with pytest.raises(StoreUnavailableError):
        retry.call(retry.STORE.but(timeout_s=0.2, wait_initial_s=0.01, wait_max_s=0.05), fn)
    assert 2 <= len(calls) < 100
