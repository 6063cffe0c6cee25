"""The user emulator: picks source rows and sends them to the ingestion API in either dialect.

- :mod:`pinpipe.emulate.emulator` — selection, pacing, the send log, ``pinpipe emulate``;
- :mod:`pinpipe.emulate.client` — the HTTP client with the project's retry policy.
"""
