"""Event-log backends, chosen by URL scheme.

=============  ==========================================  =======================
scheme         backend                                     extra
=============  ==========================================  =======================
``file://``    :class:`~pinpipe.log.embedded.EmbeddedLog`  (default, built in)
``memory://``  :class:`~pinpipe.log.memory.MemoryLog`      (built in; tests)
``kafka://``   :class:`~pinpipe.log.kafka.KafkaLog`        ``pinpipe[kafka]``
``kinesis://`` :class:`~pinpipe.log.kinesis.KinesisLog`    ``pinpipe[kinesis]``
=============  ==========================================  =======================

A plain path means ``file://`` + its absolute path. :func:`open_log` takes the command's :data:`~pinpipe.locations.Access`: ``"read"`` (``sink``, ``stream``,
``accounting``) requires an embedded log's directory to exist and creates nothing; ``"write"`` (``api``, the
default) creates a missing directory only under an existing parent, with one log line.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pinpipe.locations import LOG_SCHEMES, Access, normalise, prepare_directory
from pinpipe.log.base import Capabilities, EventLog, LogRecord, Share, ValueBlock

__all__ = ["BACKENDS", "Capabilities", "EventLog", "LogRecord", "Share", "ValueBlock", "locate_log", "open_log"]

BACKENDS: dict[str, str] = {
    "file": "pinpipe.log.embedded:EmbeddedLog",
    "memory": "pinpipe.log.memory:MemoryLog",
    "kafka": "pinpipe.log.kafka:KafkaLog",
    "kinesis": "pinpipe.log.kinesis:KinesisLog",
}


def open_log(url: str | EventLog, access: Access = "write") -> EventLog:
    """Open the event log at ``url`` (a URL or a plain path; or ``url`` itself if it is already a log: tests
    inject one). ``access`` says whether a missing embedded log is an error or may be created (see above)."""
    if isinstance(url, EventLog):
        return url
    location = locate_log(url, access)
    module, _, name = BACKENDS[location.partition("://")[0]].partition(":")
    backend: type[EventLog] = getattr(importlib.import_module(module), name)
    return backend.from_url(location)


def locate_log(url: str, access: Access) -> str:
    """The log's URL with a plain path made ``file://`` + absolute path, after checking an embedded log's
    directory for ``access`` (ConfigError for a malformed URL, NotFoundError for a missing log)."""
    location = normalise(url, "event log", "--log", LOG_SCHEMES)
    scheme, _, rest = location.partition("://")
    if scheme == "file":
        prepare_directory(Path(rest), access, "event log", location, _MISSING_HINT)
    return location


_MISSING_HINT = "check --log (or log.url) for a typo; `pinpipe api` creates the event log when it starts"
