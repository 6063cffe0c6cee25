"""``pinpipe drill`` for every component: two SIGKILLs while 600 selections per dialect arrive, then the
accounting (send logs → log → landed → batch → silver, and log → stream → silver) must balance and the stream
and batch lakes must hold the same silver and quarantine tables. ``--component corrupt``: a byte flipped in the
middle of the running log stops the sink and the stream job with an error naming the record; after
``pinpipe log repair`` the pipeline continues, accounting balances and reports the skipped record."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pinpipe.emulate.emulator import EmulateOptions, EmulateSummary
from pinpipe.errors import ConfigError, RetryableError
from pinpipe.ops import drill
from pinpipe.ops.drill import KILLABLE, Component, DrillOptions, run_drill


@pytest.mark.slow
@pytest.mark.parametrize("component", KILLABLE)
def test_drill_balances_after_sigkills(component: Component, tmp_path: Path) -> None:
    opts = DrillOptions(component, tmp_path / "drill", kills=2, events=600, seed=11, send_seconds=4.0)
    result = run_drill(opts, print)
    assert len(result.kills) == 2
    assert all(k.new_pid != k.pid for k in result.kills)
    assert result.quiesced_s is not None, "the sink or the stream job did not catch up"
    assert result.batch_accounting is not None
    for report in (result.batch_accounting, result.stream_accounting):
        if report is not None:
            assert report.failures() == [], [f.message for f in report.findings]
    failed = {dialect: s.requests_failed for dialect, s in result.sends.items()}
    assert not any(failed.values()), f"the emulator gave up on requests (retries exhausted): {failed}"
    acked = sum(s.records_acked for s in result.sends.values())
    assert acked == 2 * 3 * 600
    in_log = sum(t.in_log or 0 for t in result.batch_accounting.topics)
    assert in_log >= acked
    assert result.parity is not None and result.parity.identical  # a drill without parity does not pass
    assert result.passed


@pytest.mark.slow
def test_corrupt_drill_stops_readers_repairs_and_balances(tmp_path: Path) -> None:
    data = tmp_path / "drill"
    args = ["drill", "--component", "corrupt", "--events", "600", "--send-seconds", "4", "--data-dir", str(data)]
    run = subprocess.run([sys.executable, "-m", "pinpipe", *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "exit codes {'sink': 65, 'stream': 65}, named in the error {'sink': True, 'stream': True}" in run.stdout
    assert "log verify 65, log repair 0, log verify after 0: handled" in run.stdout
    assert run.stdout.count("log skipped 1 corrupt records of") == 2  # both accountings report it
    assert run.stdout.count("accounting: balanced") == 2
    assert "batch/stream parity: identical" in run.stdout
    skipped = (data / "log" / "skipped.json").read_text()
    assert '"offset"' in skipped and '"skipped_at"' in skipped


def test_drill_refuses_a_used_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        run_drill(DrillOptions("api", tmp_path))


def test_an_emulator_that_fails_fails_the_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An emulator thread that raises (here: the stream dialect's API probe) is raised again by the drill, named,
    instead of leaving a drill that balances over the other dialect's records alone."""
    real = drill.emulate

    def emulate(options: EmulateOptions, progress: Callable[[int], None] | None = None) -> EmulateSummary:
        if options.dialect == "stream":
            raise RetryableError("cannot reach the API at the probe")
        return real(options, progress)

    monkeypatch.setattr(drill, "emulate", emulate)
    said: list[str] = []
    with pytest.raises(RetryableError, match="cannot reach the API"):
        run_drill(DrillOptions("api", tmp_path / "drill", kills=0, events=40, send_seconds=0.5), said.append)
    assert "the stream emulator failed: cannot reach the API at the probe" in said
    assert (tmp_path / "drill" / "send-batch.jsonl").stat().st_size > 0  # the other dialect did send
