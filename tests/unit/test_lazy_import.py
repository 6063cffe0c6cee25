"""The deferred imports of :mod:`pinpipe.lazy_import`: what pyarrow does once it has settled it has no pandas.

Each pyarrow check runs in a subprocess of its own: the answer pyarrow remembers is per process.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pinpipe.lazy_import import LazyPackage

AFTER_THE_PROBE = """
import datetime, sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pinpipe.lazy_import import pyarrow_without_pandas

assert pyarrow_without_pandas() is True
when = datetime.datetime(2020, 8, 28, 3, 52, 47, tzinfo=datetime.timezone.utc)
table = pa.Table.from_pydict({"ind": [3, 1, 2], "at": pa.array([when] * 3, pa.timestamp("us", "UTC"))})
pa.array(np.arange(3)), pa.scalar(True), pa.repeat(pa.scalar("t", pa.string()), 2)
pq.write_table(table, sys.argv[1])
import pyarrow.dataset
read = pyarrow.dataset.dataset([sys.argv[1]], format="parquet").to_table()
assert read.equals(table) and read.to_pylist()[0] == {"ind": 3, "at": when}, read.to_pylist()
assert "pandas" not in sys.modules, "a conversion imported pandas"
frame = table.to_pandas()  # what needs pandas still gets it
import pandas as pd
assert isinstance(frame, pd.DataFrame) and frame["ind"].tolist() == [3, 1, 2]
assert pa.types.is_dictionary(pa.array(pd.Series(["a", "b", "a"], dtype="category")).type)
print("ok")
"""


def test_after_the_probe_conversions_load_no_pandas_and_to_pandas_still_works(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", AFTER_THE_PROBE, str(tmp_path / "t.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_probe_does_nothing_once_pandas_is_loaded() -> None:
    program = (
        "import pandas, sys\nfrom pinpipe.lazy_import import pyarrow_without_pandas\nprint(pyarrow_without_pandas())"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False"


def test_lazy_package_imports_a_submodule_on_first_access() -> None:
    lazy = LazyPackage("pyarrow")
    assert lazy.parquet is importlib.import_module("pyarrow.parquet")
    assert "parquet" in vars(lazy)  # kept: the next access is a plain attribute
    with pytest.raises(ModuleNotFoundError):
        lazy.no_such_submodule  # noqa: B018
    with pytest.raises(AttributeError):
        lazy.__wrapped__  # noqa: B018
