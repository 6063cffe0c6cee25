"""The HTML report in headless Chromium: every chart renders (offline), tables sort, filter and export, the time
series zooms, and screenshots are saved."""

from __future__ import annotations

import html
import json
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


PROBE = """<script>
document.addEventListener("DOMContentLoaded", function () {
  var out = {tables: {}};
  function cells(box, col) {
    return Array.prototype.map.call(box.querySelectorAll("tbody tr"), function (tr) { return tr.children[col].dataset.v; });
  }
  document.querySelectorAll(".data-table").forEach(function (box) {
    var th = box.querySelector('thead th[data-type="num"]') || box.querySelector("thead th");
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    th.click();
    var asc = cells(box, col), ascSort = th.getAttribute("aria-sort");
    th.click();
    out.tables[box.dataset.tableId] = {
      num: th.dataset.type === "num", asc: asc, desc: cells(box, col), sorts: [ascSort, th.getAttribute("aria-sort")],
      filter: !!box.querySelector(".table-tools input"), csvHead: window.pinpipeReport.csv(box).split("\\r\\n")[0],
      head: Array.prototype.map.call(box.querySelectorAll("thead th"), function (h) { return h.dataset.col; }).join(",")
    };
  });
  var profile = document.querySelector('.data-table[data-table-id="profile"]');
  var input = profile.querySelector(".table-tools input");
  input.value = "geo";
  input.dispatchEvent(new Event("input"));
  out.filtered = Array.prototype.filter.call(profile.querySelectorAll("tbody tr"), function (tr) { return !tr.hidden; })
    .map(function (tr) { return tr.children[0].textContent; });
  out.csvRows = window.pinpipeReport.csv(profile).trim().split("\\r\\n").length - 1;
  var fig = document.querySelector('figure[data-chart-id="silver_per_day"]');
  var svg = fig.querySelector("svg"), box = svg.getBoundingClientRect();
  function mouse(target, type, at) {
    target.dispatchEvent(new MouseEvent(type, {clientX: box.left + at * box.width, clientY: box.top + box.height / 2, bubbles: true}));
  }
  out.points = [fig.querySelectorAll("circle").length];
  mouse(svg, "mousedown", 0.02); mouse(svg, "mousemove", 0.6); mouse(svg, "mouseup", 0.6);
  out.points.push(fig.querySelectorAll("circle").length);
  mouse(fig.querySelector("svg"), "dblclick", 0.5);
  out.points.push(fig.querySelectorAll("circle").length);
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
"""Appended to a copy of the page: clicks a header of every table twice, filters the profile, exports CSV and
drags across the per-day chart, then writes what it saw into ``<pre id="probe">`` for ``--dump-dom``."""


def _number(v: str) -> float:
    return float(v)


def test_every_chart_renders_in_chromium(tmp_path: Path) -> None:
    with DuckDBEngine() as engine:
        lake = build_report_lake(tmp_path / "lake", engine)
    page = tmp_path / "report.html"
    summary = write_report(lake, page)
    assert summary.gold_tables == len(GOLD_TABLES)
    # + rows per day, quarantine share per run, rows by writer, quarantine reasons, data-quality notes
    assert summary.charts == len(GOLD_TABLES) + 5

    source = page.read_text()
    assert not re.search(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', source), "the page must not load anything"

    dom = _browse(page, tmp_path, "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None
    assert f'data-charts-rendered="{summary.charts}"' in body.group(1)
    assert "data-charts-failed" not in body.group(1)
    figures = re.findall(r'<figure[^>]*data-chart-id="([^"]+)"[^>]*>(.*?)</figure>', dom, re.S)
    assert len(figures) == summary.charts
    for chart_id, inner in figures:
        marks = re.search(r'<svg[^>]*data-bars="(\d+)"', inner)
        assert marks is not None and int(marks.group(1)) >= 1, chart_id
        assert "<title>" in inner, f"{chart_id} has no hover tooltips"
    for name in GOLD_TABLES:
        assert f'data-gold-table="{name}"' in dom, name

    screenshot = tmp_path / "report.png"
    _browse(page, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,9000", "--hide-scrollbars")
    assert screenshot.stat().st_size > 50_000
    narrow = tmp_path / "report-narrow.png"
    _browse(page, tmp_path, f"--screenshot={narrow}", "--window-size=760,3000", "--hide-scrollbars")
    assert narrow.stat().st_size > 20_000
    print(f"screenshots: {screenshot} {narrow}")


def test_tables_sort_filter_and_export_and_the_time_series_zooms(tmp_path: Path) -> None:
    with DuckDBEngine() as engine:
        lake = build_report_lake(tmp_path / "lake", engine)
    page = tmp_path / "report.html"
    write_report(lake, page)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _browse(probed, tmp_path, "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found is not None, "the probe did not run"
    probe = json.loads(html.unescape(found.group(1)))

    tables = probe["tables"]
    assert {"runs", "profile", "writers", "freshness", "quarantine", "users_joined_by_year"} <= set(tables)
    for table_id, seen in tables.items():
        assert seen["filter"], table_id
        assert seen["sorts"] == ["ascending", "descending"], table_id
        assert seen["csvHead"] == seen["head"], table_id
        asc = [v for v in seen["asc"] if v != ""]
        desc = [v for v in seen["desc"] if v != ""]
        assert seen["asc"][len(asc) :] == [""] * (len(seen["asc"]) - len(asc)), f"{table_id}: nulls sort last"
        if seen["num"]:
            assert [_number(v) for v in asc] == sorted(_number(v) for v in asc), table_id
            assert [_number(v) for v in desc] == sorted((_number(v) for v in desc), reverse=True), table_id
        else:
            assert sorted(asc) == sorted(desc), table_id
    assert probe["filtered"] and set(probe["filtered"]) == {"geo"}
    assert probe["csvRows"] == len(probe["filtered"])  # the CSV holds the rows shown

    before, zoomed, reset = probe["points"]
    assert 0 < zoomed < before and reset == before
