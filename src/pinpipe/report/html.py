"""The HTML report: one self-contained page (inline CSS, JS and SVG; no network) about a lake.

Who calls what: ``pinpipe report`` (and the batch job, after gold) calls :func:`write_report`; it reads the lake
with :func:`collect_report`, which the page is rendered from by :func:`render_report`. The page has

- a header with the run summary (runs, last run and its data interval, records read, silver rows, quarantined);
- one chart per gold table (bar charts, grouped for age group × join year) with its table of numbers;
- a data-quality section: quarantined records by reason per source (``<lake>/quarantine/<kind>``), and from the
  runs table ``<lake>/_meta/runs`` the data-quality notes (placeholders, unparsed follower counts), duplicates
  collapsed and conflicts per source, and the list of runs.

Missing quarantine or runs tables are shown as such; a lake without any gold table is an error (run ``pinpipe
batch`` first). The charts are drawn in the browser by a small inline script from chart specs embedded as JSON
(:mod:`pinpipe.report.charts` builds them); when it has drawn them all it sets ``body[data-charts-rendered]``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from pinpipe.batch.gold import GOLD_TABLES, read_gold_tables
from pinpipe.errors import InvalidInputError, NotFoundError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.report.charts import TITLES, gold_chart, quality_charts
from pinpipe.tables import KINDS, Kind

RUN_COUNTERS = ("objects", "read", "inserted", "updated", "collapsed", "conflicts", "quarantined")
"""Numeric columns of ``<lake>/_meta/runs`` summed per source."""


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, read from one lake."""

    lake_url: str
    generated_at: dt.datetime
    gold: dict[str, pa.Table]
    quarantine: dict[Kind, Counter[str] | None]
    runs: list[dict[str, Any]] | None
    silver_rows: dict[Kind, int | None]
    notes: dict[Kind, Counter[str]] = field(default_factory=dict)
    totals: dict[Kind, Counter[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`write_report` wrote."""

    path: Path
    charts: int
    gold_tables: int
    runs: int


# ---------------------------------------------------------------------------------------------- reading


def _notes(value: Any) -> dict[str, int]:
    if not value:
        return {}
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): int(v) for k, v in parsed.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def collect_report(lake: Lake, *, now: dt.datetime | None = None) -> ReportData:
    """Read the gold, quarantine, silver and runs tables of ``lake`` (gold is required, the rest optional)."""
    gold = read_gold_tables(lake, required=False)
    if not gold:
        raise NotFoundError(
            f"the lake {lake.url} has no gold tables, so there is nothing to report",
            hint=f"run `pinpipe batch --lake {lake.url}` first",
            lake=lake.url,
        )
    quarantine: dict[Kind, Counter[str] | None] = {}
    for kind in KINDS:
        table = delta.read_table(lake, "quarantine", kind)
        quarantine[kind] = None if table is None else Counter(table.column("reason").to_pylist())
    runs_table = delta.read_table(lake, "_meta", "runs")
    runs = None
    notes: dict[Kind, Counter[str]] = defaultdict(Counter)
    totals: dict[Kind, Counter[str]] = defaultdict(Counter)
    if runs_table is not None:
        runs = sorted(runs_table.to_pylist(), key=lambda r: (str(r.get("started_at") or ""), str(r.get("kind"))))
        for run in runs:
            kind = run.get("kind")
            if kind not in KINDS:
                continue
            notes[kind].update(_notes(run.get("notes")))
            for name in RUN_COUNTERS:
                if isinstance(run.get(name), int):
                    totals[kind][name] += run[name]
    return ReportData(
        lake_url=lake.url,
        generated_at=now or dt.datetime.now(dt.UTC),
        gold=gold,
        quarantine=quarantine,
        runs=runs,
        silver_rows={kind: delta.row_count(lake, "silver", kind) for kind in KINDS},
        notes=dict(notes),
        totals=dict(totals),
    )


# ---------------------------------------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, column: str = "") -> str:
    if value is None:
        return '<span class="null">null</span>'
    if isinstance(value, int) and not isinstance(value, bool) and "year" not in column:
        return f"{value:,}"
    if isinstance(value, dt.datetime):
        return _e(value.strftime("%Y-%m-%d %H:%M" if column == "short" else "%Y-%m-%d %H:%M:%S"))
    return _e(value)


def _table(columns: list[str], rows: list[list[Any]], *, numeric: set[str] | None = None, css: str = "") -> str:
    numeric = numeric or set()
    head = "".join(f'<th class="{"n" if c in numeric else ""}">{_e(c)}</th>' for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if c in numeric else ""}">{_num(v, c)}</td>' for c, v in zip(columns, r, strict=True)
        )
        + "</tr>"
        for r in rows
    )
    return f'<div class="table-wrap {css}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _arrow_table(table: pa.Table) -> str:
    numeric = {f.name for f in table.schema if pa.types.is_integer(f.type) and "year" not in f.name}
    rows = [list(r.values()) for r in table.to_pylist()]
    if not rows:
        return '<p class="empty">No rows.</p>'
    return _table(table.schema.names, rows, numeric=numeric)


def _tile(label: str, value: str, sub: str = "") -> str:
    extra = f'<div class="tile-sub">{sub}</div>' if sub else ""
    return (
        f'<div class="tile"><div class="tile-label">{_e(label)}</div><div class="tile-value">{value}</div>{extra}</div>'
    )


def _interval(run: dict[str, Any]) -> str:
    start, end = run.get("interval_start"), run.get("interval_end")
    if start is None and end is None:
        return "no data interval (run by hand)"
    return f"data interval {_num(start, 'short')} → {_num(end, 'short')}"


def _header(data: ReportData) -> str:
    runs = data.runs or []
    run_ids = {r.get("run_id") for r in runs}
    last = runs[-1] if runs else None
    read = sum(t["read"] for t in data.totals.values())
    quarantined = sum(sum(c.values()) for c in data.quarantine.values() if c is not None)
    silver = [f"{k} {n:,}" for k, n in data.silver_rows.items() if n is not None]
    tiles = [
        _tile("batch runs", f"{len(run_ids):,}" if runs else "–", "none recorded" if data.runs is None else ""),
        _tile(
            "last run",
            _num(last.get("finished_at") or last.get("started_at"), "short") if last else "–",
            _interval(last) if last else "",
        ),
        _tile("records read", f"{read:,}" if runs else "–", "all runs, all sources"),
        _tile("silver rows", f"{sum(n or 0 for n in data.silver_rows.values()):,}", " · ".join(silver) or "no silver"),
        _tile("quarantined", f"{quarantined:,}", "records set aside with a reason"),
        _tile("gold tables", f"{len(data.gold)} / {len(GOLD_TABLES)}"),
    ]
    return (
        '<header class="top"><div class="wrap"><h1>pinpipe report</h1>'
        f'<p class="meta">lake <code>{_e(data.lake_url)}</code> · generated '
        f"{_e(data.generated_at.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>"
        f'<div class="tiles">{"".join(tiles)}</div></div></header>'
    )


def _card(chart: dict[str, Any], body: str, *, wide: bool = False) -> str:
    attrs = f'data-chart-id="{_e(chart["id"])}"'
    if chart.get("table"):
        attrs += f' data-gold-table="{_e(chart["table"])}"'
    return (
        f'<section class="card{" wide" if wide else ""}" id="{_e(chart["id"])}">'
        f'<h3>{_e(chart["title"])}</h3><p class="sub">{_e(chart["subtitle"])}</p>'
        f'<figure class="chart" {attrs}></figure>{body}</section>'
    )


def _quality(data: ReportData, charts: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    by_id = {c["id"]: c for c in charts}
    rows: list[list[Any]] = []
    for kind, counts in data.quarantine.items():
        if counts is None:
            rows.append([kind, "(no quarantine table)", None])
        for reason, n in sorted((counts or {}).items()):
            rows.append([kind, reason, n])
    body = _table(["source", "reason", "records"], rows, numeric={"records"})
    if "quarantine" in by_id:
        parts.append(_card(by_id["quarantine"], body))
    else:
        parts.append(
            '<section class="card"><h3>Quarantined records by reason</h3>'
            '<p class="sub">Nothing was quarantined.</p>' + body + "</section>"
        )
    if data.runs is None:
        parts.append(
            '<section class="card"><h3>Data-quality notes</h3><p class="sub">The lake has no runs table '
            "(<code>_meta/runs</code>) yet: run <code>pinpipe batch</code> to record placeholder, null, "
            "duplicate and conflict counts.</p></section>"
        )
        return "".join(parts)
    note_rows = [[k, note, n] for k, c in data.notes.items() for note, n in sorted(c.items())]
    note_body = _table(["source", "note", "values"], note_rows, numeric={"values"}) if note_rows else ""
    if "notes" in by_id:
        parts.append(_card(by_id["notes"], note_body))
    else:
        parts.append('<section class="card"><h3>Data-quality notes</h3><p class="sub">No notes recorded.</p></section>')
    totals = [[k, *(data.totals.get(k, Counter())[c] for c in RUN_COUNTERS)] for k in KINDS]
    parts.append(
        '<section class="card wide"><h3>Duplicates, conflicts and accounting per source</h3>'
        '<p class="sub">Summed over all runs: re-sent identical records are collapsed; records with the same '
        "<code>ind</code> and different content are conflicts (the last one landed wins).</p>"
        + _table(["source", *RUN_COUNTERS], totals, numeric=set(RUN_COUNTERS))
        + "</section>"
    )
    return "".join(parts)


def _runs(data: ReportData) -> str:
    if not data.runs:
        return '<p class="empty">No runs recorded.</p>'
    columns = ["run_id", "path", "kind", "started_at", "finished_at", "interval_start", "interval_end", *RUN_COUNTERS]
    rows = [[r.get(c) for c in columns] for r in reversed(data.runs)]
    return _table(columns, rows, numeric=set(RUN_COUNTERS), css="nowrap")


def _asset(name: str) -> str:
    return (resources.files("pinpipe.report") / "assets" / name).read_text(encoding="utf-8")


def render_report(data: ReportData) -> str:
    """The whole page as one HTML string."""
    charts = [gold_chart(name, table) for name, table in data.gold.items()]
    extra = quality_charts(data.quarantine, data.notes)
    cards = []
    for chart in charts:
        name = chart["table"]
        cards.append(_card(chart, _arrow_table(data.gold[name]), wide=chart.get("wide", False)))
    missing = [n for n in GOLD_TABLES if n not in data.gold]
    for name in missing:
        cards.append(
            f'<section class="card"><h3>{_e(TITLES[name][0])}</h3><p class="sub">Table <code>{_e(name)}</code> '
            "has not been computed yet.</p></section>"
        )
    payload = orjson.dumps({"charts": charts + extra}, default=str).decode().replace("<", "\\u003c")
    nav = "".join(f'<a href="#{_e(c["id"])}">{_e(c["title"])}</a>' for c in charts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pinpipe report — {_e(data.lake_url)}</title>
<style>{_asset("report.css")}</style></head>
<body data-charts-total="{len(charts) + len(extra)}">
{_header(data)}
<main class="wrap">
<nav class="toc">{nav}<a href="#quality">Data quality</a><a href="#runs">Runs</a></nav>
<h2>Analysis</h2>
<div class="grid">{"".join(cards)}</div>
<h2 id="quality">Data quality</h2>
<div class="grid">{_quality(data, extra)}</div>
<h2 id="runs">Runs</h2>
<section class="card wide">{_runs(data)}</section>
</main>
<footer class="wrap">pinpipe · gold tables under <code>{_e(data.lake_url)}/gold</code></footer>
<script type="application/json" id="report-data">{payload}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""


def write_report(lake: Lake, out: Path, *, now: dt.datetime | None = None) -> ReportSummary:
    """Read ``lake`` and write the page to ``out`` (atomically: a temporary file, then a rename)."""
    data = collect_report(lake, now=now)
    page = render_report(data)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise InvalidInputError(f"could not write the report to {out}: {exc}", hint="check the --out path") from exc
    charts = len(data.gold) + len(quality_charts(data.quarantine, data.notes))
    return ReportSummary(out, charts, len(data.gold), len({r.get("run_id") for r in data.runs or []}))
