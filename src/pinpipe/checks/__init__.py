"""What verifies the pipeline's answers.

- :mod:`pinpipe.checks.counts` — counting records stage by stage (log, landing, silver, quarantine);
- :mod:`pinpipe.checks.accounting` — ``pinpipe accounting``: sent → acked → log → landed → silver;
- :mod:`pinpipe.checks.quality` — ``pinpipe quality``: the gate a DAG run must pass;
- :mod:`pinpipe.checks.parity` — ``pinpipe parity``: two lakes hold the same tables;
- :mod:`pinpipe.checks.status` — ``pinpipe status``: how far each stage got, and whether one is stuck.
"""
