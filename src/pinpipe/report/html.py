"""The HTML report: one self-contained page (inline CSS, JS and SVG; no network) about a lake.

Who calls what: ``pinpipe report`` (and ``pinpipe demo``) call :func:`write_report`; it reads the lake with
:func:`collect_report`, which the page is rendered from by :func:`render_report` through the Jinja2 templates in
``templates/`` (autoescaped; :mod:`pinpipe.report.view` turns the data into tiles, tables and sentences). The page has

- a header with the run summary (batch runs, last run and its data interval, records read, silver rows, when
  silver was last written and by which path, quarantined);
- one chart per gold table (bar charts, grouped for age group × join year) with its table of numbers;
- the pipeline over time: silver rows written per day (both paths), quarantine share per batch run, freshness;
- who wrote silver: each table's rows by the path that inserted them (:mod:`pinpipe.report.history` reads the
  Delta commits and their ``pinpipe-batch:``/``pinpipe-stream:`` transactions), next to the batch runs' counts;
- data quality: quarantined records by reason per source (``<lake>/quarantine/<kind>``), the data-quality notes
  of ``<lake>/_meta/runs``, a per-column profile of nulls and cleaned placeholders for the three silver tables
  (:mod:`pinpipe.report.profile`), duplicates collapsed and conflicts per source, and the list of runs.

Every table can be sorted (click a header), filtered and downloaded as CSV. Missing quarantine or runs tables
are shown as such; a lake without any gold table is an error (run ``pinpipe batch`` first). The charts are
drawn in the browser by a small inline script (``assets/report.js``; ``assets/tables.js`` makes the tables
sortable) from chart specs embedded as JSON (:mod:`pinpipe.report.charts`, :mod:`pinpipe.report.trends`); when
it has drawn them all it sets ``body[data-charts-rendered]``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import orjson
import pyarrow as pa

from pinpipe.batch.gold import GOLD_TABLES, read_gold_tables
from pinpipe.errors import InvalidInputError, NotFoundError
from pinpipe.lake import delta
from pinpipe.lake.runs import RUNS_TABLE
from pinpipe.lake.store import Lake
from pinpipe.report import view
from pinpipe.report.charts import COLUMN_LABELS, TITLES, gold_chart, quality_charts
from pinpipe.report.history import SilverHistory, silver_history
from pinpipe.report.profile import ColumnProfile, profile_table
from pinpipe.report.trends import quarantine_share_chart, silver_per_day_chart, writers_chart
from pinpipe.tables import KINDS, Kind

RUN_COUNTERS = view.RUN_COUNTERS


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
    history: dict[Kind, SilverHistory | None] = field(default_factory=dict)
    profile: dict[Kind, list[ColumnProfile]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`write_report` wrote."""

    path: Path
    charts: int
    gold_tables: int
    runs: int

    def describe(self) -> str:
        """``10 charts, 9 gold tables, 1 run``."""
        return ", ".join(
            [
                view.plural(self.charts, "chart"),
                view.plural(self.gold_tables, "gold table"),
                view.plural(self.runs, "run"),
            ]
        )


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
        table = delta.read_table(lake, "quarantine", kind, columns=["reason"])
        quarantine[kind] = None if table is None else Counter(table.column("reason").to_pylist())
    runs_table = delta.read_table(lake, *RUNS_TABLE)
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
    silver_rows: dict[Kind, int | None] = {}
    history: dict[Kind, SilverHistory | None] = {}
    profile: dict[Kind, list[ColumnProfile]] = {}
    for kind in KINDS:
        silver_rows[kind], profile[kind] = profile_table(lake, kind, notes.get(kind, Counter()))
        history[kind] = silver_history(lake, kind, silver_rows[kind])
    return ReportData(
        lake_url=lake.url,
        generated_at=now or dt.datetime.now(dt.UTC),
        gold=gold,
        quarantine=quarantine,
        runs=runs,
        silver_rows=silver_rows,
        notes=dict(notes),
        totals=dict(totals),
        history=history,
        profile=profile,
    )


# ---------------------------------------------------------------------------------------------- rendering

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("pinpipe.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _asset(name: str) -> str:
    return (resources.files("pinpipe.report") / "assets" / name).read_text(encoding="utf-8")


def _charts(data: ReportData) -> dict[str, list[dict[str, Any]]]:
    trends = [silver_per_day_chart(data.history), quarantine_share_chart(data.runs)]
    writers = writers_chart(data.history)
    return {
        "gold": [gold_chart(name, table) for name, table in data.gold.items()],
        "trends": [c for c in trends if c is not None],
        "writers": [writers] if writers else [],
        "quality": quality_charts(data.quarantine, data.notes),
    }


def render_report(data: ReportData) -> str:
    """The whole page as one HTML string."""
    charts = _charts(data)
    every = [c for group in charts.values() for c in group]
    gold_cards = [
        {
            "chart": chart,
            "table": view.arrow_table(chart["table"], data.gold[chart["table"]], COLUMN_LABELS.get(chart["table"])),
        }
        for chart in charts["gold"]
    ]
    missing = [{"title": TITLES[n][0], "name": n} for n in GOLD_TABLES if n not in data.gold]
    payload = orjson.dumps({"charts": every}, default=str).decode().replace("<", "\\u003c")
    quality = {c["id"]: c for c in charts["quality"]}
    return _ENV.get_template("report.html.j2").render(
        data=data,
        generated=data.generated_at.strftime("%Y-%m-%d %H:%M:%S %Z"),
        tiles=view.tiles(data),
        gold_cards=gold_cards,
        gold_count=f"{len(data.gold)} / {len(GOLD_TABLES)}",
        missing=missing,
        trends=charts["trends"],
        freshness=view.freshness_table(data),
        writers_chart=charts["writers"][0] if charts["writers"] else None,
        writers=view.writers_table(data),
        reconcile=view.reconcile_sentences(data),
        quarantine_chart=quality.get("quarantine"),
        quarantine=view.quarantine_table(data),
        notes_chart=quality.get("notes"),
        notes=view.notes_table(data),
        profile=view.profile_table(data),
        totals=view.totals_table(data),
        runs=view.runs_table(data),
        run_count=view.plural(len({r.get("run_id") for r in data.runs or []}), "batch run"),
        charts_total=len(every),
        payload=payload,
        css=_asset("report.css"),
        js=_asset("report.js"),
        tables_js=_asset("tables.js"),
    )


def chart_count(data: ReportData) -> int:
    """How many charts the page of ``data`` draws."""
    return sum(len(group) for group in _charts(data).values())


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
    return ReportSummary(out, chart_count(data), len(data.gold), len({r.get("run_id") for r in data.runs or []}))
