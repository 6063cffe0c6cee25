"""Heavy imports deferred to the paths that need them: a fresh ``pinpipe batch`` starts in a fraction of a second.

Two tools, both about pandas, which pyarrow loads although pinpipe's DuckDB path never uses it (0.1 s of an idle
machine's start, up to 0.7 s on a loaded one: hundreds of files):

- :class:`LazyPackage`: ``import pyarrow.dataset`` imports pandas, though the batch job reaches a dataset only
  when it reads a table that already exists. :mod:`pinpipe.lake.silver_read` and :mod:`pinpipe.lake.changes` bind the
  name ``pyarrow`` to ``LazyPackage("pyarrow")`` at run time (type checkers see the real ``import
  pyarrow.dataset``), so the ``pyarrow.dataset.dataset(...)`` in their function bodies imports the submodule
  when a call first needs it.
- :func:`pyarrow_without_pandas`: pyarrow also imports pandas the first time it converts any Python object
  (``pa.array([...])``, ``pa.scalar(...)``), only to ask whether the object is a pandas one. ``pinpipe batch``
  (DuckDB engine) calls it before its run.

``tests/unit/test_cli_imports.py`` holds the CLI to both: importing the batch command loads no pandas, and
``tests/unit/test_lazy_import.py`` checks pyarrow's side of the bargain (conversions stay pandas-free, and
``to_pandas`` still works after it).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class LazyPackage:
    """Stands for the package ``name``: ``.sub`` is ``import name.sub`` done on first access (then kept)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> ModuleType:
        if attr.startswith("_"):
            raise AttributeError(attr)
        module = importlib.import_module(f"{self._name}.{attr}")
        setattr(self, attr, module)
        return module

    def __repr__(self) -> str:
        return f"<package {self._name!r}, submodules imported on first use>"


class _Hidden:
    """A ``sys.meta_path`` finder under which ``import pandas`` fails as if pandas were not installed."""

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while pyarrow probes for it)", name=name)


def pyarrow_without_pandas() -> bool:
    """Let pyarrow settle, without importing pandas, that this process has no pandas; True if it did.

    pyarrow asks once per process whether pandas can be imported, on its first conversion of a Python object, and
    remembers the answer for its "is this a pandas object?" checks. Here that first question is asked with pandas
    hidden, so the checks cost nothing from then on. Whatever truly needs pandas (``Table.to_pandas()``,
    ``Table.from_pandas``) still gets it: pyarrow imports pandas again when it needs it rather than asks. A
    process that never hands pyarrow a pandas object — the DuckDB batch — converts exactly as before; only a
    nanosecond timestamp's ``as_py()`` would give a ``datetime`` instead of a ``pandas.Timestamp``. Does nothing
    (False) if pandas is loaded already or pyarrow has asked before. Called by ``pinpipe batch`` on the DuckDB
    engine, in the CLI's own process only (never by the library: a caller's process may use pandas objects).
    """
    if "pandas" in sys.modules:
        return False
    import pyarrow as pa

    hidden = _Hidden()
    sys.meta_path.insert(0, hidden)
    try:
        pa.array([0])  # pyarrow's first question: is pandas importable? (answered here: no)
    finally:
        sys.meta_path.remove(hidden)
    return "pandas" not in sys.modules
