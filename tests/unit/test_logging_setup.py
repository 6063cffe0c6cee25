"""The log handler writes to ``sys.stderr`` as it is at each line: a command set up under a redirected stderr
(``contextlib.redirect_stderr``, a test harness's capture) keeps logging after the redirect has ended."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import pytest

from pinpipe.telemetry.logs import get_logger, setup_logging


@pytest.fixture(autouse=True)
def _restore_pinpipe_logger() -> Iterator[None]:
    root = logging.getLogger("pinpipe")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved


def test_lines_after_the_redirect_ended_go_to_the_stderr_of_then(capsys: pytest.CaptureFixture[str]) -> None:
    during = io.StringIO()
    with contextlib.redirect_stderr(during):
        setup_logging()
        get_logger("setup-test").warning("while redirected")
    during.close()  # the stream logging was set up with is gone
    get_logger("setup-test").warning("after the redirect", extra={"fields": {"n": 1}})
    err = capsys.readouterr().err
    assert "pinpipe.setup-test: after the redirect  n=1" in err
    assert "Logging error" not in err and "while redirected" not in err


def test_json_lines_follow_stderr_too(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json")
    get_logger("setup-test").info("one line")
    assert '"msg":"one line"' in capsys.readouterr().err
