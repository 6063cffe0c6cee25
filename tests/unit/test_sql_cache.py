"""DuckDB's SQL cache: a fresh engine runs the SQL another process generated, with the same results, and a
change to the code that builds programs compiles afresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pinpipe.batch.gold import compute_gold_from_arrow
from pinpipe.engine import duckdb as duck
from pinpipe.engine.duckdb import DuckDBEngine
from tests.fixtures.gold_cases import EXPECTED, EXTRA_USERS, POSTS, silver_from_posts


def _gold(cache: Path | None) -> dict[str, list[dict[str, object]]]:
    with DuckDBEngine(sql_cache=cache) as engine:
        gold = compute_gold_from_arrow(engine, silver_from_posts(POSTS, extra_users=EXTRA_USERS))
    return {name: table.to_pylist() for name, table in gold.items()}


def test_cached_sql_gives_the_same_gold(tmp_path: Path) -> None:
    cache = tmp_path / "sql"
    assert _gold(cache) == EXPECTED  # compiles and stores
    stored = sorted(cache.glob("*.json"))
    assert stored, "nothing was cached"
    assert _gold(cache) == EXPECTED  # runs the stored SQL
    assert sorted(cache.glob("*.json")) == stored


def test_a_change_to_the_programs_compiles_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "sql"
    _gold(cache)
    first = set(cache.glob("*.json"))
    monkeypatch.setattr(duck, "program_fingerprint", lambda: "another version of the code")
    assert _gold(cache) == EXPECTED
    assert set(cache.glob("*.json")) > first  # new entries beside the old ones


def test_an_unreadable_entry_is_compiled_again(tmp_path: Path) -> None:
    cache = tmp_path / "sql"
    _gold(cache)
    for entry in cache.glob("*.json"):
        entry.write_bytes(b"{not json")
    assert _gold(cache) == EXPECTED


def test_a_fresh_process_runs_the_cached_sql_without_compiling(tmp_path: Path) -> None:
    """The first process compiles cleaning's programs; a second one, whose compiler is made to fail, still
    prepares them: everything came from the cache."""
    cache = str(tmp_path / "sql")
    setup = (
        "from pathlib import Path; from pinpipe.engine.duckdb import DuckDBEngine; "
        "from pinpipe.clean import prepare_cleaning; "
    )
    fail = "DuckDBEngine._compile = lambda *a, **k: (_ for _ in ()).throw(AssertionError('compiled')); "
    run = f"prepare_cleaning(DuckDBEngine(sql_cache=Path({cache!r})))"
    subprocess.run([sys.executable, "-c", setup + run], check=True, timeout=120)
    done = subprocess.run([sys.executable, "-c", setup + fail + run], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    broken = subprocess.run(
        [sys.executable, "-c", setup + fail + run.replace(cache, str(tmp_path / "empty"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode != 0 and "compiled" in broken.stderr  # the check above can fail
