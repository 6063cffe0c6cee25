"""Process set-up for serving the ingestion API: the cyclic garbage collector tuned for request traffic.

Who calls what: ``pinpipe api`` (:mod:`pinpipe.cli.ingest_cmd`) and ``bench/ingest.py`` call
:func:`tune_gc_for_serving` once, after :func:`~pinpipe.ingest.app.create_app` and before the server starts.
Tests do not: it changes the whole process.

Why: a 100-record request parses into about a hundred dicts. With the default threshold (a young-generation
collection every 700 new containers) the collector runs every few requests, each time traversing the requests in
flight, and promotes them so that full collections — which walk every object of the loaded app (tens of
thousands: FastAPI, pydantic, prometheus) — follow often. Measured with ``bench/ingest.py``, that was about a
tenth of the server's CPU. Request objects are freed by reference counting as soon as a request is answered, so
collecting less often finds no more garbage; freezing what start-up created takes it out of every collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""New containers between young-generation collections (CPython's default is 700)."""


def tune_gc_for_serving() -> None:
    """Freeze everything built so far (the app, its schemas, imported modules) out of future collections and
    collect the young generation less often. Call once per process, just before serving."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
