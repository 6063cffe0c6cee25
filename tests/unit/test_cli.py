"""The CLI shell: every failure path ends in one clear line and the right exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from pinpipe.cli import _run, main
from pinpipe.errors import LogUnavailableError, NotFoundError

probe = typer.Typer()
"""An application of the test's own (the production app gets no test commands)."""


@probe.command("exit")
def _exit_with(code: int) -> None:
    raise typer.Exit(code)


@probe.command("fail")
def _fail() -> None:
    raise LogUnavailableError("the log is down", hint="start it and retry", topic="t.pin", partition=3)


@probe.command("bug")
def _bug() -> None:
    raise KeyError("a bug")


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return int(info.value.code or 0)


def test_typer_exit_codes_reach_the_shell() -> None:
    assert _run(["exit", "4"], probe) == 4
    assert _run(["exit", "0"], probe) == 0


def test_pinpipe_error_prints_one_line_with_its_facts_and_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["fail"], probe) == LogUnavailableError.exit_code == 75
    err = capsys.readouterr().err
    assert "error: the log is down (topic=t.pin, partition=3)" in err
    assert "hint: start it and retry" in err
    assert "Traceback" not in err


def test_an_unexpected_exception_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["bug"], probe) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        main(["--debug", "results", "--lake", f"file://{tmp_path / 'no-lake'}"])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["exit", "not-a-number"], probe) == 2
    assert _main(["--log-format", "xml", "config"]) == 2
    assert _main(["no-such-command"]) == 2
    assert "Usage" in capsys.readouterr().err
