"""Masking secrets wherever settings or URLs are shown: the part of :mod:`pinpipe.config` that prints, not reads.

Who calls what: :func:`pinpipe.config.describe` (re-exported there) backs ``pinpipe config``; :func:`mask_secrets`
(also re-exported by :mod:`pinpipe.config`) is applied by the log formatters (:mod:`pinpipe.telemetry.logs`), the
CLI's error printer and :mod:`pinpipe.locations` to every URL they print. Nothing here reads the environment.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

MASK = "***"

_USERINFO_SECRET = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):(?P<secret>[^\s@]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;][A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|credential)[A-Za-z0-9_.-]*=)"
    r"(?P<secret>[^&;\s#]+)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """``text`` with every password embedded in a URL masked: ``user:PASSWORD@host`` → ``user:***@host`` and
    ``?password=...`` / ``&sasl.password=...`` / ``?aws_secret_access_key=...`` → ``...=***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO_SECRET.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def describe(settings: BaseModel) -> dict[str, Any]:
    """The settings as a plain dict with every secret masked: ``SecretStr`` values as ``'**********'``, a
    password inside a URL (``source.url``, ``log.url``, ``lake.endpoint``…) as ``***``."""
    masked: dict[str, Any] = _masked(settings.model_dump(mode="json"))
    return masked
