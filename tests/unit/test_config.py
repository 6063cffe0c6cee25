"""Settings precedence and validation; secrets (and passwords inside URLs) never printed, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pinpipe.config import describe, load_settings
from pinpipe.errors import ConfigError
from tests.fixtures.services import run_pinpipe


def test_precedence_flags_over_env_over_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "pinpipe.toml").write_text('[api]\nport = 9000\nhost = "127.0.0.2"\n[lake]\nurl = "file://x"\n')
    monkeypatch.setenv("PINPIPE__API__PORT", "9100")
    s = load_settings({"lake": {"url": "file://flag"}, "api": {"root_path": None}})
    assert (s.api.port, s.api.host, s.lake.url) == (9100, "127.0.0.2", "file://flag")


def test_secrets_are_masked(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINPIPE__API__API_KEY", "s3cret-value")
    shown = describe(load_settings())
    assert "s3cret-value" not in repr(shown)
    assert shown["api"]["api_key"] == "**********"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ("PINPIPE__API__PORT", "PINPIPE__API__PORT='not valid!' (environment)"),
        ("PINPIPE__PREFIX", "prefix"),
        ("PINPIPE__NOPE__X", "nope"),
    ],
)
def test_bad_settings_name_the_setting(workdir: Path, monkeypatch: pytest.MonkeyPatch, env: str, needle: str) -> None:
    monkeypatch.setenv(env, "not valid!")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert needle in str(info.value)


def _pinpipe(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_pinpipe(*args, cwd=cwd, env=env)


def test_a_bad_value_is_named_as_its_user_wrote_it(tmp_path: Path) -> None:
    """A flag by its flag, a variable by its name, a file setting by its key and file — not by the setting."""
    flag = _pinpipe("api", "--port", "99999", cwd=tmp_path, env={})
    assert flag.returncode == 2 and "error: invalid settings: --port 99999: " in flag.stderr, flag.stderr
    env = _pinpipe("config", cwd=tmp_path, env={"PINPIPE__STREAM__MAX_BATCH": "many"})
    assert env.returncode == 2 and "PINPIPE__STREAM__MAX_BATCH='many' (environment)" in env.stderr, env.stderr
    (tmp_path / "pinpipe.toml").write_text("[sink]\nflush_seconds = -1\n")
    toml = _pinpipe("config", cwd=tmp_path, env={})
    assert toml.returncode == 2 and "sink.flush_seconds = '-1' in pinpipe.toml" in toml.stderr, toml.stderr


def test_a_pinpipe_variable_with_one_underscore_is_named_as_unread_with_the_setting_it_likely_means(
    tmp_path: Path,
) -> None:
    """``PINPIPE_API_PORT`` (one underscore) is not a setting: the command warns, names ``PINPIPE__API__PORT``,
    and goes on with the default; the variable pinpipe does read with one underscore draws no warning."""
    (tmp_path / "pinpipe.toml").write_text("")
    env = {"PINPIPE_API_PORT": "99999", "PINPIPE_FROBNICATE": "1", "PINPIPE_CONFIG": str(tmp_path / "pinpipe.toml")}
    out = _pinpipe("config", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "PINPIPE_API_PORT is not read" in out.stderr and "did you mean PINPIPE__API__PORT?" in out.stderr
    assert "PINPIPE_FROBNICATE is not read" in out.stderr and "PINPIPE_CONFIG" not in out.stderr
    assert "99999" not in out.stdout  # the setting kept its default


def test_a_bad_secret_value_is_never_echoed(tmp_path: Path) -> None:
    """A session token of the wrong type in pinpipe.toml is named by its key, its value masked."""
    (tmp_path / "pinpipe.toml").write_text("[lake]\nsession_token = 12345678987654321\n")
    done = _pinpipe("config", cwd=tmp_path, env={})
    assert done.returncode == 2 and "lake.session_token = '***' in pinpipe.toml" in done.stderr, done.stderr
    assert "12345678987654321" not in done.stderr + done.stdout


def test_config_never_prints_a_password_inside_a_url(tmp_path: Path) -> None:
    env = {
        "PINPIPE__SOURCE__URL": "mysql+pymysql://root:hunter2-pw@127.0.0.1:3306/pinterest_data",
        "PINPIPE__LAKE__ENDPOINT": "http://minio:endpoint-pw@127.0.0.1:9000",
        "PINPIPE__LOG__URL": "kafka://127.0.0.1:9092?security.protocol=SASL_PLAINTEXT&sasl.password=query-pw",
    }
    for args in (("config",), ("config", "--json")):
        proc = _pinpipe(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        shown = proc.stdout + proc.stderr
        assert "hunter2-pw" not in shown and "endpoint-pw" not in shown and "query-pw" not in shown
        assert "mysql+pymysql://root:***@127.0.0.1:3306/pinterest_data" in shown
        assert "http://minio:***@127.0.0.1:9000" in shown
        assert "sasl.password=***" in shown
    doc = json.loads(_pinpipe("config", "--json", cwd=tmp_path, env=env).stdout)
    assert doc["source"]["url"] == "mysql+pymysql://root:***@127.0.0.1:3306/pinterest_data"


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("sink", "--log", "kafka://app:kafka-pw@127.0.0.1:9", "--lake", "lake"), "kafka://app:***@127.0.0.1:9"),
        (("results", "--lake", "s3://AKIA:s3-pw@bucket/lake"), "s3://AKIA:***@bucket/lake"),
        (("source", "show", "--db", "mysql+pymysql://root:db-pw@127.0.0.1:1/pinterest_data"), "root:***@127.0.0.1:1"),
    ],
)
def test_errors_never_print_a_password_inside_a_url(tmp_path: Path, args: tuple[str, ...], shown: str) -> None:
    proc = _pinpipe(*args, cwd=tmp_path, env={})
    assert proc.returncode in (2, 75), proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "-pw" not in out, out
    assert shown in out, out
