"""One exception tree for everything pinpipe raises on purpose.

```
PinpipeError                  root: every deliberate failure; carries facts as attributes
├── RetryableError            the same call may succeed later (a server down, a timeout, a lost race)
│   ├── LogUnavailableError   the event log cannot take or serve records right now (API answers 503)
│   ├── StoreUnavailableError the object store / lake did not answer
│   ├── CommitConflictError   a Delta commit lost a race with another writer (re-read, then retry)
│   └── SourceUnavailableError the source database did not answer
└── FatalError                retrying the same call will fail the same way; a person must act
    ├── ConfigError           a setting, flag or URL is wrong (names the setting and what is valid)
    │   ├── MissingExtraError an optional dependency is not installed (names the `pip install`)
    │   ├── NotFoundError     a location or table a command reads does not exist (a typo'd --lake/--log)
    │   └── UnknownTopicError a topic or stream that the log does not have
    ├── InvalidInputError     input data cannot be used (a file, a request body, a table)
    ├── CorruptStateError     stored state contradicts itself (a record that no longer checks, a lake edited
    │                         by hand); names topic/partition/offset or table
    └── AccountingError       records were lost or doubled between two stages
```

Exit codes (SPEC §8): 0 success; 2 :class:`ConfigError` and usage errors; 3 :class:`AccountingError`; 65
(``EX_DATAERR``) every other :class:`FatalError` — do not retry; 75 (``EX_TEMPFAIL``) :class:`RetryableError`;
1 only for an unexpected internal error (a bug). The CLI prints an error's ``facts`` after its message.

Foreign exceptions (SQLAlchemy, confluent-kafka, boto3, obstore, deltalake) are mapped to this tree once, at the
backend boundary, with ``raise ... from exc``. Bad *records* are never exceptions: cleaning returns them as
quarantined rows with a reason.
"""

from __future__ import annotations

from typing import Any


class PinpipeError(Exception):
    """Root of the tree. ``hint`` says what to do; ``facts`` carries stage, backend, offset and the like."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.facts = facts

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class RetryableError(PinpipeError):
    """The operation may succeed if repeated later."""

    exit_code = 75  # EX_TEMPFAIL


class FatalError(PinpipeError):
    """The operation will not succeed without a change by a person."""

    exit_code = 65  # EX_DATAERR: a fatal data or state error, never retried by a scheduler


class LogUnavailableError(RetryableError):
    """The event log cannot accept or serve records right now."""


class StoreUnavailableError(RetryableError):
    """The object store holding the lake did not answer."""


class CommitConflictError(RetryableError):
    """A Delta commit conflicted with a concurrent writer's; re-reading the table and retrying may succeed."""


class SourceUnavailableError(RetryableError):
    """The source database did not answer."""


class ConfigError(FatalError):
    """A setting, command-line flag or URL is invalid."""

    exit_code = 2  # same as a usage error


class MissingExtraError(ConfigError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the Python package {package!r}, which is not installed",
            hint=f"run: pip install 'pinpipe[{extra}]'",
            package=package,
            extra=extra,
        )


class NotFoundError(ConfigError):
    """A location (lake, log directory, bucket) or table that a command reads does not exist."""


class UnknownTopicError(ConfigError):
    """A topic or stream name that the event log does not hold."""


class InvalidInputError(FatalError):
    """Input data (a file, a request, a table) cannot be used as given."""


class CorruptStateError(FatalError):
    """Stored state contradicts itself."""


class AccountingError(FatalError):
    """Records were lost or doubled between two stages."""

    exit_code = 3


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra) from exc
