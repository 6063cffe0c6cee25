"""Exit codes and error lines of the real ``pinpipe`` script, as a shell or Airflow sees them (SPEC §8)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.batch.gold import compute_gold_from_arrow, write_gold
from pinpipe.engine import DuckDBEngine
from pinpipe.lake.store import Lake
from tests.fixtures.gold_cases import EXTRA_USERS, POSTS, silver_from_posts

PINPIPE = [sys.executable, "-m", "pinpipe"]


@pytest.fixture(scope="module")
def gold_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("exit-status-lake")
    with DuckDBEngine() as engine:
        gold = compute_gold_from_arrow(engine, silver_from_posts(POSTS, extra_users=EXTRA_USERS))
    write_gold(Lake(f"file://{root}"), gold)
    yield f"file://{root}"


def _pinpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PINPIPE, *args], capture_output=True, text=True, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL
    )


def test_reading_commands_exit_0_every_time(gold_lake: str, tmp_path: Path) -> None:
    """Arrow/delta-rs threads must not turn a success into SIGABRT at interpreter exit (delta-rs issue 2184)."""
    codes = []
    for i in range(12):
        command = (
            ("results", "--lake", gold_lake, "--format", "json")
            if i % 2
            else ("parity", "--lake", gold_lake, "--lake", gold_lake)
        )
        proc = _pinpipe(*command, cwd=tmp_path)
        codes.append(proc.returncode)
        assert "terminate called" not in proc.stderr, proc.stderr
    assert codes == [0] * 12


def test_error_lines_are_not_wrapped_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 6)) / "lake"
    proc = _pinpipe("results", "--lake", f"file://{deep}", cwd=tmp_path)
    assert proc.returncode != 0
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(deep) in error_lines[0], proc.stderr
    assert any(line.startswith("hint:") and "pinpipe batch" in line for line in proc.stderr.splitlines())
