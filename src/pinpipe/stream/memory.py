"""Which allocator serves Arrow's buffers in a stream worker: the system's (glibc malloc), unless the operator
chose one with Arrow's own ``ARROW_DEFAULT_MEMORY_POOL`` (``system``, ``mimalloc`` or ``jemalloc``).

Why not Arrow's default (mimalloc): a stream worker allocates and frees the same few megabytes of Parquet pages
and merged rows every micro-batch, on the merge threads and the compactor's, for as long as it runs. Behind
Arrow's default pool those pages stay in mimalloc's arena after Arrow frees them: at 10M rows per kind in silver
and 1,000 records/s (``bench/stream.py``, 300 s, 2026-12-02) the worker's RSS reached 742 MB and its last fifth
averaged 667 MB, of which the arena held 200–320 MB while Arrow reported 0–9 MB allocated. On the system pool the
same run peaked at 467 MB, its last fifth averaged 423 MB and its second half rose 0.5 MB/min; latency did not
get worse (p99 1,976 ms against 2,456 ms on that slow machine; 875 against 792 ms a day earlier on a quiet one).
Calling ``release_unused()`` after every merge and compaction kept mimalloc and took the peak only to 634 MB.
See docs/scaling.md ("Where the worker's memory goes").

Who calls what: :func:`pinpipe.stream.workers.run_worker` calls :func:`choose_arrow_pool` first thing, before
anything allocates from the pool, and logs the pool's name with its start line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pyarrow as pa

POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def choose_arrow_pool(environ: Mapping[str, str] = os.environ) -> str:
    """Make the system allocator Arrow's default pool for this process unless ``ARROW_DEFAULT_MEMORY_POOL`` is
    set (then Arrow's choice stands); the name of the pool in use (``system``, ``mimalloc``, ``jemalloc``)."""
    if not environ.get(POOL_VARIABLE):
        pa.set_memory_pool(pa.system_memory_pool())
    return str(pa.default_memory_pool().backend_name)
