"""Prometheus metrics of a stream worker, in a registry of its own (no process-wide state).

Who calls what: :class:`pinpipe.stream.worker.StreamWorker` updates them after every micro-batch and every compaction;
``pinpipe stream --metrics-port N`` serves :attr:`StreamMetrics.registry` (with the process and build-info metrics of
:mod:`pinpipe.telemetry.process`) on ``http://<--metrics-host>:N/metrics`` (``metrics.host``, default 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pinpipe.log.base import TopicPartition
from pinpipe.telemetry.process import register_process_metrics, serve_metrics

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class StreamMetrics:
    """Counters per kind, batch and merge durations, and lag per partition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        register_process_metrics(r, "stream")
        self.records = Counter("pinpipe_stream_records", "Records read from the log", ["kind"], registry=r)
        self.silver_rows = Counter(
            "pinpipe_stream_silver_rows", "Silver rows inserted or updated", ["kind", "op"], registry=r
        )
        self.quarantined = Counter("pinpipe_stream_quarantined", "Records quarantined", ["kind"], registry=r)
        self.duplicates = Counter("pinpipe_stream_duplicates", "Duplicate records collapsed", ["kind"], registry=r)
        self.conflicts = Counter(
            "pinpipe_stream_conflicts", "Same ind with different content in one batch", ["kind"], registry=r
        )
        self.batches = Counter("pinpipe_stream_batches", "Micro-batches committed", registry=r)
        self.retries = Counter("pinpipe_stream_retries", "Delta commits retried after a conflict", registry=r)
        self.batch_seconds = Histogram(
            "pinpipe_stream_batch_seconds",
            "From a micro-batch's start to its commits being confirmed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.merge_seconds = Histogram(
            "pinpipe_stream_merge_seconds", "Time of one silver merge", ["kind"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_records = Histogram(
            "pinpipe_stream_batch_records",
            "Records per micro-batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.compactions = Counter("pinpipe_stream_compactions", "Silver compactions run", ["kind"], registry=r)
        self.lag = Gauge("pinpipe_stream_lag_records", "Records not yet read", ["topic", "partition"], registry=r)
        self.last_commit = Gauge(
            "pinpipe_stream_last_commit_timestamp_seconds", "Unix time of the last Delta commit", registry=r
        )

    def set_lag(self, lag: Mapping[TopicPartition, int]) -> None:
        for (topic, partition), value in lag.items():
            self.lag.labels(topic, str(partition)).set(value)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
        serve_metrics(self.registry, port, host)
