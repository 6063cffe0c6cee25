"""Chart specs over time and by writer: silver rows written per day, quarantine share per run, rows per path.

Called by :func:`pinpipe.report.html.render_report` with what :func:`~pinpipe.report.html.collect_report` read:
the silver histories (:mod:`pinpipe.report.history`) and the batch runs (``<lake>/_meta/runs``). The spec shapes
are those of :mod:`pinpipe.report.charts` (``line`` and ``stacked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinpipe.report.history import SilverHistory, rows_per_day
from pinpipe.tables import KINDS, Kind

WRITER_SERIES = ("stream", "batch", "other", "earlier")
"""Segments of the rows-by-writer chart: who inserted the rows a silver table holds now."""


def _minute(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)


def silver_per_day_chart(histories: Mapping[Kind, SilverHistory | None]) -> dict[str, Any] | None:
    """Rows inserted or updated in each silver table per UTC day, by both paths (None without any commit)."""
    days = rows_per_day(dict(histories))
    if not days:
        return None
    return {
        "id": "silver_per_day",
        "table": None,
        "title": "Silver rows written per day",
        "subtitle": "Rows inserted or updated per UTC day in each silver table, by the batch and stream paths "
        "together (from the tables' Delta commits).",
        "type": "line",
        "unit": "rows",
        "format": "int",
        "category_title": "day (UTC)",
        "value_title": "rows written",
        "series": list(KINDS),
        "points": [{"x": day, "values": [per.get(k) for k in KINDS]} for day, per in days.items()],
    }


def quarantine_share_chart(runs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Quarantined / read per batch run and source, in percent (None without runs)."""
    if not runs:
        return None
    per_run: dict[str, dict[str, Any]] = {}
    for run in runs:
        entry = per_run.setdefault(str(run.get("run_id")), {"x": _minute(run.get("started_at")), "kinds": {}})
        read, quarantined = run.get("read") or 0, run.get("quarantined") or 0
        entry["kinds"][run.get("kind")] = round(100 * quarantined / read, 3) if read else None
    points = [
        {"x": e["x"], "values": [e["kinds"].get(k) for k in KINDS]}
        for e in sorted(per_run.values(), key=lambda e: e["x"])
    ]
    return {
        "id": "quarantine_share",
        "table": None,
        "title": "Quarantine share per batch run",
        "subtitle": "Records quarantined as a share of the records each batch run read, per source.",
        "type": "line",
        "unit": "%",
        "format": "percent",
        "category_title": "batch run (start, UTC)",
        "value_title": "quarantined",
        "series": list(KINDS),
        "points": points,
    }


def writer_rows(history: SilverHistory) -> dict[str, int]:
    """The rows of one silver table by who inserted them (:data:`WRITER_SERIES`); they add up to its rows."""
    return {
        "stream": history.inserted.get("stream", 0),
        "batch": history.inserted.get("batch", 0),
        "other": history.inserted.get("other", 0),
        "earlier": history.earlier,
    }


def writers_chart(histories: Mapping[Kind, SilverHistory | None]) -> dict[str, Any] | None:
    """Each silver table's rows split by the path that inserted them (None without silver tables)."""
    splits = {kind: writer_rows(h) for kind in KINDS if (h := histories.get(kind)) is not None}
    if not splits:
        return None
    used = [s for s in WRITER_SERIES if any(split[s] for split in splits.values())]
    groups = [{"label": kind, "values": [split[s] or None for s in used]} for kind, split in splits.items()]
    return {
        "id": "writers",
        "table": None,
        "title": "Silver rows by the path that wrote them",
        "subtitle": "Rows each silver table holds, by the writer of the commit that inserted them: the stream "
        "worker (pinpipe-stream:… transactions), the batch job (pinpipe-batch:…), another writer, or commits older "
        "than the history read.",
        "type": "stacked",
        "unit": "rows",
        "category_title": "silver table",
        "value_title": "rows",
        "series": used,
        "groups": groups,
    }
