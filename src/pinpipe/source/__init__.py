"""The source database port: the three raw tables and how they are filled.

- :mod:`pinpipe.source.database` — the source database (SQLite default, MySQL/MariaDB, PostgreSQL): engine,
  tables, :func:`~pinpipe.source.database.read_row` / :func:`~pinpipe.source.database.count_rows` for the emulator;
- :mod:`pinpipe.source.load` — ``pinpipe source init|show``: idempotent loading with bookkeeping;
- :mod:`pinpipe.source.sample` — the bundled real sample; :mod:`pinpipe.source.jsonl` — JSONL files.

Made-up tables and their expected answers live in :mod:`pinpipe.synth`.
"""
