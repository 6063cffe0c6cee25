"""The CLI shell: every failure path ends in one clear line and the right exit code."""

from __future__ import annotations

import pytest
import typer

from pinpipe.cli import app, main
from pinpipe.errors import LogUnavailableError


@app.command("zz-exit", hidden=True)
def _exit_with(code: int) -> None:
    raise typer.Exit(code)


@app.command("zz-fail", hidden=True)
def _fail() -> None:
    raise LogUnavailableError("the log is down", hint="start it and retry")


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return int(info.value.code or 0)


def test_typer_exit_codes_reach_the_shell() -> None:
    assert _run(["zz-exit", "4"]) == 4
    assert _run(["zz-exit", "0"]) == 0


def test_pinpipe_error_prints_one_line_with_hint_and_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["zz-fail"]) == LogUnavailableError.exit_code == 75
    err = capsys.readouterr().err
    assert "error: the log is down" in err
    assert "hint: start it and retry" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(LogUnavailableError):
        main(["--debug", "zz-fail"])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["zz-exit", "not-a-number"]) == 2
    assert _run(["--log-format", "xml", "config"]) == 2
    assert _run(["no-such-command"]) == 2
    assert "Usage" in capsys.readouterr().err
