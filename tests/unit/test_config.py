from __future__ import annotations

from pathlib import Path

import pytest

from pinpipe.config import describe, load_settings
from pinpipe.errors import ConfigError


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
    [("PINPIPE__API__PORT", "api.port"), ("PINPIPE__PREFIX", "prefix"), ("PINPIPE__NOPE__X", "nope")],
)
def test_bad_settings_name_the_setting(workdir: Path, monkeypatch: pytest.MonkeyPatch, env: str, needle: str) -> None:
    monkeypatch.setenv(env, "not valid!")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert needle in str(info.value)
