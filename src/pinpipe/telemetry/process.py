"""Metrics every pinpipe process exposes beside its stage's own: the process collector and the build info.

Who calls what: :class:`~pinpipe.telemetry.sink.SinkMetrics`, :class:`~pinpipe.telemetry.stream.StreamMetrics`
and :class:`~pinpipe.telemetry.ingest.ApiMetrics` call :func:`register_process_metrics` on their own registry, so
each ``/metrics`` also serves ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds``, ``process_start_time_seconds`` … (prometheus_client's process collector; Linux only, empty
elsewhere), ``pinpipe_arrow_allocated_bytes`` (what Arrow's memory pool holds now: resident memory that grows
while this stays level is the allocators' retention, not live data; 0 in a process that has not loaded pyarrow)
and ``pinpipe_build_info{version, python}`` (always 1: join on it to label a stage's series by
version). :func:`serve_metrics` serves a registry on the configured host.
"""

from __future__ import annotations

import platform
import sys

from prometheus_client import CollectorRegistry, Gauge, Info, ProcessCollector, start_http_server

from pinpipe import __version__
from pinpipe.config import is_loopback
from pinpipe.telemetry.logs import get_logger

log = get_logger("telemetry")


def register_process_metrics(registry: CollectorRegistry, stage: str) -> None:
    """Add the process collector, ``pinpipe_arrow_allocated_bytes`` and ``pinpipe_build_info{version, python,
    stage}`` to ``registry``."""

    ProcessCollector(registry=registry)
    arrow = Gauge(
        "pinpipe_arrow_allocated_bytes", "Bytes allocated from Arrow's default memory pool", registry=registry
    )
    arrow.set_function(_arrow_allocated_bytes)
    info = Info("pinpipe_build", "pinpipe build information (always 1)", registry=registry)
    info.info({"version": __version__, "python": platform.python_version(), "stage": stage})


def _arrow_allocated_bytes() -> float:
    """Arrow's default pool's allocated bytes, without importing pyarrow into a process that does not use it."""
    pyarrow = sys.modules.get("pyarrow")
    return float(pyarrow.total_allocated_bytes()) if pyarrow is not None else 0.0


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``registry`` as ``/metrics`` on ``host:port`` from a daemon thread; says so in one log line (and
    that the endpoint has no authentication when ``host`` is not loopback)."""
    start_http_server(port, addr=host, registry=registry)
    fields = {"host": host, "port": port}
    if is_loopback(host):
        log.info("serving /metrics", extra={"fields": fields})
    else:
        log.warning("serving /metrics off loopback, without authentication", extra={"fields": fields})
