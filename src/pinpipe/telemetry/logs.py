"""Structured logging for long-running commands: human lines by default, one JSON object per line with
``--log-format json``. Extra facts go in ``extra={"fields": {...}}`` and appear as key=value / JSON keys. A password inside a URL is masked in every line
(:func:`pinpipe.config.mask_secrets`)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

from pinpipe.config import mask_secrets

LogFormat = Literal["human", "json"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return mask_secrets(orjson.dumps(doc, default=str).decode())


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask_secrets(line)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each line, not the stream it was when logging was set
    up: after ``contextlib.redirect_stderr`` (or a test harness's capture) ends, lines still go somewhere open."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
"""Loggers of libraries whose lines go through the same formatter as pinpipe's (the ASGI server's start, stop and
error lines). The server must be started without its own logging config (``uvicorn.run(..., log_config=None)``)."""


def setup_logging(fmt: LogFormat = "human", level: int = logging.INFO) -> None:
    """Send pinpipe's log lines, and those of :data:`FOREIGN_LOGGERS`, to stderr in ``fmt``. Idempotent."""
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _HumanFormatter())
    root = logging.getLogger("pinpipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for name in FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers[:] = [handler] if "." not in name else []  # children propagate to "uvicorn"
        foreign.propagate = "." in name


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``pinpipe`` namespace."""
    return logging.getLogger(name if name.startswith("pinpipe") else f"pinpipe.{name}")
