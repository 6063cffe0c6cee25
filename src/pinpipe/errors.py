"""One exception tree for everything pinpipe raises on purpose.

```
PinpipeError                  root: every deliberate failure; carries facts as attributes
├── RetryableError            the same call may succeed later (a server down, a timeout, a lost race)
│   ├── LogUnavailableError   the event log cannot take or serve records right now (API answers 503)
│   ├── StoreUnavailableError the object store / lake did not answer
│   ├── CommitConflictError   a Delta commit lost a race with another writer (re-read, then retry)
│   │   └── Unfollowable      another writer changed a table's metadata under a log head (lake.log_head)
│   ├── SourceUnavailableError the source database did not answer
│   └── ApiUnavailableError   the ingestion API did not answer (the emulator's side)
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

Foreign exceptions (SQLAlchemy, confluent-kafka, boto3, obstore, deltalake, httpx, the OS) are mapped to this
tree in one table, :data:`FOREIGN_ERRORS`, applied at each backend boundary by :func:`map_exceptions` with
``raise ... from exc`` (as httpx maps httpcore's errors). A boundary lets through only pinpipe errors: a foreign
error without a rule is a bug and is raised as it is, so a test that feeds every boundary its foreign errors fails
when one is left unmapped (``tests/unit/test_error_map.py``). Bad *records* are never exceptions: cleaning returns them as
quarantined rows with a reason.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal


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


class ApiUnavailableError(RetryableError):
    """The ingestion API did not answer a request (connection refused or reset, a timeout, a garbled answer)."""


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


Boundary = Literal["kafka", "kinesis", "source", "http", "store", "delta"]


@dataclass(frozen=True)
class Rule:
    """Map ``module.name`` (an exception class, looked up only if its module is already imported: an SDK that
    was never imported cannot have raised) to ``target``; with ``code``, only errors whose code is that."""

    module: str
    name: str
    target: type[PinpipeError]
    code: str | None = None

    def matches(self, exc: BaseException) -> bool:
        cls = getattr(sys.modules.get(self.module), self.name, None)
        return isinstance(cls, type) and isinstance(exc, cls) and (self.code is None or error_code(exc) == self.code)


_S3_NOT_RETRYABLE = ("NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
"""S3 error codes that retrying cannot fix (a missing bucket, rejected credentials)."""
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")

FOREIGN_ERRORS: dict[Boundary, tuple[Rule, ...]] = {
    "kafka": (
        Rule("confluent_kafka", "KafkaException", UnknownTopicError, code="UNKNOWN_TOPIC_OR_PART"),
        Rule("confluent_kafka", "KafkaException", LogUnavailableError),
        Rule("builtins", "BufferError", LogUnavailableError),
    ),
    "kinesis": (
        Rule("botocore.exceptions", "ClientError", UnknownTopicError, code="ResourceNotFoundException"),
        Rule("botocore.exceptions", "ClientError", LogUnavailableError),
        Rule("botocore.exceptions", "BotoCoreError", LogUnavailableError),
    ),
    "source": (
        Rule("sqlalchemy.exc", "OperationalError", SourceUnavailableError),
        Rule("sqlalchemy.exc", "DBAPIError", InvalidInputError),
        Rule("sqlalchemy.exc", "ArgumentError", ConfigError),
        Rule("sqlalchemy.exc", "NoSuchModuleError", ConfigError),
    ),
    "http": (
        Rule("httpx", "TransportError", ApiUnavailableError),
        Rule("builtins", "OSError", ApiUnavailableError),  # TimeoutError, ConnectionError included
        Rule("asyncio", "IncompleteReadError", ApiUnavailableError),
        Rule("builtins", "ValueError", ApiUnavailableError),  # an answer that is not HTTP
    ),
    "store": (
        *(Rule("obstore.exceptions", "BaseError", ConfigError, code=c) for c in _S3_NOT_RETRYABLE),
        Rule("obstore.exceptions", "NotFoundError", NotFoundError),
        Rule("builtins", "FileNotFoundError", NotFoundError),
        Rule("obstore.exceptions", "PermissionDeniedError", ConfigError),
        Rule("obstore.exceptions", "UnauthenticatedError", ConfigError),
        Rule("obstore.exceptions", "InvalidPathError", ConfigError),
        Rule("obstore.exceptions", "BaseError", StoreUnavailableError),
        Rule("builtins", "OSError", StoreUnavailableError),
    ),
    "delta": (
        Rule("deltalake.exceptions", "CommitFailedError", CommitConflictError),
        Rule("deltalake.exceptions", "SchemaMismatchError", CorruptStateError),
        Rule("deltalake.exceptions", "DeltaProtocolError", CorruptStateError),
        Rule("deltalake.exceptions", "TableNotFoundError", NotFoundError),
        Rule("deltalake.exceptions", "DeltaError", StoreUnavailableError),
        Rule("builtins", "OSError", StoreUnavailableError),
    ),
}
"""Per boundary, the first rule that matches a foreign error decides its class in the tree."""


def error_code(exc: BaseException | None) -> str | None:
    """The SDK's error code: botocore's ``Error.Code``, confluent-kafka's ``KafkaError.name()``, the ``<Code>``
    of the S3 error document that obstore quotes in its message."""
    if exc is None:
        return None
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "")) or None
    first = exc.args[0] if exc.args else None
    name = getattr(first, "name", None)
    if callable(name):
        return str(name())
    found = _S3_CODE.search(str(exc))
    return found.group(1) if found else None


def mapped_class(boundary: Boundary, exc: BaseException) -> type[PinpipeError] | None:
    """The tree class ``exc`` maps to at ``boundary``, or None when no rule covers it."""
    return next((rule.target for rule in FOREIGN_ERRORS[boundary] if rule.matches(exc)), None)


@contextlib.contextmanager
def map_exceptions(
    boundary: Boundary,
    what: str | Mapping[type[PinpipeError], str],
    *,
    hint: str | Mapping[type[PinpipeError], str] | None = None,
    detail: Callable[[BaseException], str] | None = None,
    **facts: Any,
) -> Iterator[None]:
    """Raise foreign errors from the block as their class in the tree: ``"<what>: <first line of the error>"``,
    with ``hint`` (each of ``what`` and ``hint`` one text, or one per target class) and ``facts`` (``backend=`` is the boundary unless given). Pinpipe errors pass unchanged;
    a foreign error without a rule is re-raised as it is (a bug to fix in :data:`FOREIGN_ERRORS`)."""
    try:
        yield
    except PinpipeError:
        raise
    except Exception as exc:
        target = mapped_class(boundary, exc)
        if target is None:
            raise
        text = detail(exc) if detail is not None else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        facts.setdefault("backend", boundary)
        said = hint.get(target) if isinstance(hint, Mapping) else hint
        told = what.get(target, "failed") if isinstance(what, Mapping) else what
        raise target(f"{told}: {text}", hint=said, **facts) from exc


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra) from exc
