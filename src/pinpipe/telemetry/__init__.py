"""Structured logging (:mod:`~pinpipe.telemetry.logs`) and the Prometheus metrics of every stage
(:mod:`~pinpipe.telemetry.ingest`, :mod:`~pinpipe.telemetry.sink`, :mod:`~pinpipe.telemetry.stream`)."""
