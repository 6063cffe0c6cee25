"""The HTML report in headless Chromium: every chart renders (offline) and a screenshot is saved."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pinpipe.batch.gold import GOLD_TABLES
from pinpipe.engine import DuckDBEngine
from pinpipe.report.html import write_report
from tests.fixtures.report_lake import build_report_lake

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        print("chromium is not installed (Debian package `chromium`; `make system-deps` installs it)")
        pytest.skip("chromium is not installed")
    return path


def _browse(page: Path, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    done = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_chart_renders_in_chromium(tmp_path: Path) -> None:
    with DuckDBEngine() as engine:
        lake = build_report_lake(tmp_path / "lake", engine)
    page = tmp_path / "report.html"
    summary = write_report(lake, page)
    assert summary.gold_tables == len(GOLD_TABLES)
    assert summary.charts == len(GOLD_TABLES) + 2  # + quarantine reasons, data-quality notes

    source = page.read_text()
    assert not re.search(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', source), "the page must not load anything"

    dom = _browse(page, tmp_path, "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None
    assert f'data-charts-rendered="{summary.charts}"' in body.group(1)
    assert "data-charts-failed" not in body.group(1)
    for name in GOLD_TABLES:
        figure = re.search(rf'<figure[^>]*data-gold-table="{name}"[^>]*>(.*?)</figure>', dom, re.S)
        assert figure is not None, name
        bars = re.search(r'<svg[^>]*data-bars="(\d+)"', figure.group(1))
        assert bars is not None and int(bars.group(1)) >= 1, name

    screenshot = tmp_path / "report.png"
    _browse(page, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,4000")
    assert screenshot.stat().st_size > 50_000
    print(f"screenshot: {screenshot}")
