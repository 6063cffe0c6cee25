"""The source side: the raw tables and the data that fills them.

- :mod:`pinpipe.source.database` — the source database (SQLite default, MySQL/MariaDB, PostgreSQL): engine,
  tables, :func:`~pinpipe.source.database.read_row` / :func:`~pinpipe.source.database.count_rows` for the emulator;
- :mod:`pinpipe.source.load` — ``pinpipe source init|show``: idempotent loading with bookkeeping;
- :mod:`pinpipe.source.sample` — the bundled real sample;
- :mod:`pinpipe.source.generate` — seeded synthetic tables with the real dirt at the real rates;
- :mod:`pinpipe.source.faults` — injected faults and send lists (re-sends, conflicts) for emulation;
- :mod:`pinpipe.source.oracle` — the expected silver/quarantine/accounting for records sent;
- :mod:`pinpipe.source.profile` — dirt rates of raw records; :mod:`pinpipe.source.jsonl` — JSONL files.
"""
