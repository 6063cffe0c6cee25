"""``pinpipe <command> --help`` through the real script: switches take no value, so none shows a value type."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

SWITCHES = {
    "": ["--help"],
    "log": ["--help"],
    "source": ["--help"],
    "sink": ["--until-idle", "--help"],
    "stream": ["--until-idle"],
    "source init": ["--replace"],
    "batch": ["--no-gold", "--help"],
    "accounting": ["--allow-lag", "--json"],
    "emulate": ["--json"],
}


@pytest.mark.parametrize("command", sorted(SWITCHES))
def test_help_shows_no_value_type_after_a_switch(command: str) -> None:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-m", "pinpipe", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for switch in SWITCHES[command]:
        line = next((ln for ln in done.stdout.splitlines() if re.search(rf"{switch}\b", ln)), None)
        assert line is not None, f"{switch} is not in `pinpipe {command} --help`:\n{done.stdout}"
        assert "<bool>" not in line, line
    if command not in ("", "log", "source"):  # groups list commands; commands' valued options show their type
        assert "<int>" in done.stdout or "<str>" in done.stdout
