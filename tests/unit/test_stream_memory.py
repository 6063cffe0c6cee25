"""The stream worker's Arrow pool: the system allocator unless ARROW_DEFAULT_MEMORY_POOL says otherwise (a fresh
interpreter each, since the pool is process-wide and Arrow reads the variable when it loads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from pinpipe.stream.memory import choose_arrow_pool; import pyarrow as pa; "
    "print(choose_arrow_pool(), pa.default_memory_pool().backend_name)"
)


@pytest.mark.parametrize(("variable", "expected"), [(None, "system system"), ("mimalloc", "mimalloc mimalloc")])
def test_the_worker_pool_follows_arrows_variable(variable: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if variable is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = variable
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
