"""Event-log backends, chosen by URL scheme.

=============  ==========================================  =======================
scheme         backend                                     extra
=============  ==========================================  =======================
``file://``    :class:`~pinpipe.log.embedded.EmbeddedLog`  (default, built in)
``memory://``  :class:`~pinpipe.log.memory.MemoryLog`      (built in; tests)
``kafka://``   :class:`~pinpipe.log.kafka.KafkaLog`        ``pinpipe[kafka]``
``kinesis://`` :class:`~pinpipe.log.kinesis.KinesisLog`    ``pinpipe[kinesis]``
=============  ==========================================  =======================
"""

from __future__ import annotations

import importlib

from pinpipe.errors import ConfigError
from pinpipe.log.base import Capabilities, EventLog, LogRecord, ValueBlock

__all__ = ["BACKENDS", "Capabilities", "EventLog", "LogRecord", "ValueBlock", "open_log"]

BACKENDS: dict[str, str] = {
    "file": "pinpipe.log.embedded:EmbeddedLog",
    "memory": "pinpipe.log.memory:MemoryLog",
    "kafka": "pinpipe.log.kafka:KafkaLog",
    "kinesis": "pinpipe.log.kinesis:KinesisLog",
}


def open_log(url: str | EventLog) -> EventLog:
    """Open the event log at ``url`` (or return ``url`` itself if it is already a log: tests inject one)."""
    if isinstance(url, EventLog):
        return url
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in BACKENDS:
        raise ConfigError(
            f"unknown event log URL {url!r}",
            hint="use one of: " + ", ".join(f"{s}://..." for s in BACKENDS),
        )
    module, _, name = BACKENDS[scheme].partition(":")
    backend: type[EventLog] = getattr(importlib.import_module(module), name)
    return backend.from_url(url)
