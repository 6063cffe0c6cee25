"""Prometheus metrics of the sink, on a registry of their own (no process-wide singleton).

Who calls what: :class:`~pinpipe.lake.sink.LakeSink` calls :meth:`SinkMetrics.landed` after each durable object
and :meth:`SinkMetrics.position` after each commit; ``pinpipe sink --metrics-port`` serves :attr:`registry` (with
the process and build-info metrics of :mod:`pinpipe.telemetry.process`) on ``--metrics-host`` (``metrics.host``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from pinpipe.telemetry.process import register_process_metrics, serve_metrics


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        register_process_metrics(self.registry, "sink")
        self.records = Counter(
            "pinpipe_sink_records", "records landed in the lake", ["topic", "partition"], registry=self.registry
        )
        self.objects = Counter(
            "pinpipe_sink_objects", "objects written to the lake", ["topic", "partition"], registry=self.registry
        )
        self.bytes = Counter("pinpipe_sink_bytes", "bytes written to the lake", ["topic"], registry=self.registry)
        self.committed = Gauge(
            "pinpipe_sink_committed_position", "committed position", ["topic", "partition"], registry=self.registry
        )
        self.lag = Gauge(
            "pinpipe_sink_lag_records",
            "records in the log not yet landed (log end offset - committed position)",
            ["topic", "partition"],
            registry=self.registry,
        )

    def landed(self, topic: str, partition: int, records: int, size: int) -> None:
        self.records.labels(topic, str(partition)).inc(records)
        self.objects.labels(topic, str(partition)).inc()
        self.bytes.labels(topic).inc(size)

    def position(self, topic: str, partition: int, committed: int, end: int | None) -> None:
        self.committed.labels(topic, str(partition)).set(committed)
        if end is not None:
            self.lag.labels(topic, str(partition)).set(max(0, end - committed))

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``host:port`` from a daemon thread."""
        serve_metrics(self.registry, port, host)
