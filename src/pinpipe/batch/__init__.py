"""The daily batch stage: landed objects → clean → silver/quarantine Delta → gold.

- :mod:`pinpipe.batch.job` — ``run_batch``: incremental over landed objects, exactly once, ``_meta/runs``;
- :mod:`pinpipe.batch.gold` — the nine gold analysis tables.
"""
