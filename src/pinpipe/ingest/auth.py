"""API-key checks for the ingestion API (header ``X-API-Key``).

:func:`check_startup` is called by :func:`pinpipe.ingest.app.create_app`: a server bound to a non-loopback
address must have a key. :func:`authorised` is called by the middleware for every request except ``/healthz``;
the refusal answers in the dialect of the path (:func:`refusal`).
"""

from __future__ import annotations

import hmac

from pinpipe.config import Settings, is_loopback
from pinpipe.errors import ConfigError

HEADER = b"x-api-key"
OPEN_PATHS = frozenset({"/healthz"})


def check_startup(settings: Settings) -> bytes | None:
    """The key every request must carry (None: no key required); refuse to serve off loopback without one."""
    key = settings.api.api_key
    if key is None or not key.get_secret_value():
        if not is_loopback(settings.api.host):
            raise ConfigError(
                f"the API would listen on {settings.api.host}, which is not loopback, without an API key",
                hint="set --api-key or PINPIPE__API__API_KEY (clients send it as the X-API-Key header), "
                "or bind to 127.0.0.1",
            )
        return None
    return key.get_secret_value().encode()


def authorised(expected: bytes | None, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the raw ASGI ``headers`` carry the expected key (constant-time compare)."""
    if expected is None:
        return True
    for name, value in headers:
        if name.lower() == HEADER:
            return hmac.compare_digest(value, expected)
    return False


def refusal(path: str) -> tuple[int, bytes, bytes]:
    """Status, content type and body for a missing or wrong key: API Gateway's 403 on the Kinesis paths,
    the REST proxy's 401 envelope elsewhere."""
    if path.startswith("/streams"):
        return 403, b"application/json", b'{"message":"Forbidden"}'
    return (
        401,
        b"application/vnd.kafka.v2+json",
        b'{"error_code":40101,"message":"missing or invalid API key: send it in the X-API-Key header"}',
    )
