"""Prometheus metrics of one API app (its own registry: two apps in one process never share counters).

Filled by :class:`pinpipe.ingest.app.IngestMiddleware` (requests, latency) and by the two dialect modules
(records accepted/rejected, append latency); served by ``GET /metrics`` with the process and build-info metrics of
:mod:`pinpipe.telemetry.process`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pinpipe.telemetry.process import register_process_metrics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        register_process_metrics(self.registry, "api")
        self.requests = Counter(
            "pinpipe_api_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pinpipe_api_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.records = Counter(
            "pinpipe_api_records_total",
            "records accepted (durably appended) or rejected, by topic",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "pinpipe_api_connections_closed_total",
            "client connections the server closed itself: over_cap (refused at accept), request_timeout (a request "
            "not received within api.body_timeout_s), headers_too_large",
            ["reason"],
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "pinpipe_api_append_seconds",
            "time for the event log to durably append one request's records",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._children: dict[tuple[Any, ...], Any] = {}

    def observe_request(self, route: str, method: str, status: int | str, seconds: float) -> None:
        """Count one request by its answer's status, or ``"disconnected"`` for a client that went away before
        sending its whole request (label children are cached: this runs on every request)."""
        key = ("req", route, method, status)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        hist = self._children.get(("lat", route))
        if hist is None:
            hist = self._children[("lat", route)] = self.request_seconds.labels(route)
        hist.observe(seconds)

    def record_count(self, topic: str, outcome: str, n: int) -> None:
        """Count ``n`` records of ``topic`` as accepted or rejected."""
        key = ("rec", topic, outcome)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self.records.labels(topic, outcome)
        counter.inc(n)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
