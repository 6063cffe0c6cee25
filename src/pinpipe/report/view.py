"""What the page shows, as plain values for the Jinja2 templates: tiles, tables (cells with their display text
and their raw value for sorting and CSV), and the sentences that reconcile the two paths.

Called by :func:`pinpipe.report.html.render_report`; nothing here escapes HTML (the templates autoescape).
A table is a dict ``{"id", "columns": [{"name", "label", "numeric"}], "rows": [[{"text", "v", "null"}]]}``; the
CSV download uses ``name`` and ``v``, the page ``label`` and ``text``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pinpipe.report.trends import WRITER_SERIES, writer_rows
from pinpipe.tables import KINDS

if TYPE_CHECKING:
    from pinpipe.report.html import ReportData

RUN_COUNTERS = ("objects", "read", "inserted", "updated", "collapsed", "conflicts", "quarantined")
"""Numeric columns of ``<lake>/_meta/runs`` summed per source."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``1,000 runs`` (``many`` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def ago(then: dt.datetime | None, now: dt.datetime) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``4 days`` between ``then`` and ``now``; ``–`` without ``then``."""
    if then is None:
        return "–"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return plural(seconds // 86_400, "day")


def fmt_time(value: Any, seconds: bool = True) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return "–" if value is None else str(value)


def cell(value: Any, column: str = "") -> dict[str, Any]:
    """One table cell: its text, its raw value (sorting, CSV) and whether it is null."""
    if value is None:
        return {"text": "null", "v": "", "null": True}
    if isinstance(value, bool):
        return {"text": str(value).lower(), "v": str(value).lower(), "null": False}
    if isinstance(value, int):
        return {"text": str(value) if "year" in column else f"{value:,}", "v": value, "null": False}
    if isinstance(value, float):
        return {"text": f"{value:,.1f}", "v": value, "null": False}
    if isinstance(value, dt.datetime):
        return {"text": fmt_time(value), "v": value.isoformat(), "null": False}
    if isinstance(value, list | tuple):
        text = "[" + ", ".join(str(v) for v in value) + "]"
        return {"text": text, "v": text, "null": False}
    return {"text": str(value), "v": str(value), "null": False}


def data_table(
    table_id: str,
    columns: list[str],
    rows: Iterable[Iterable[Any]],
    *,
    numeric: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    numeric, labels = set(numeric), labels or {}
    return {
        "id": table_id,
        "columns": [{"name": c, "label": labels.get(c, c), "numeric": c in numeric} for c in columns],
        "rows": [
            [c if isinstance(c, dict) else cell(c, name) for name, c in zip(columns, r, strict=True)] for r in rows
        ],
    }


def arrow_table(table_id: str, table: pa.Table, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) and "year" not in f.name]
    return data_table(
        table_id, table.schema.names, (r.values() for r in table.to_pylist()), numeric=numeric, labels=labels
    )


def tiles(data: ReportData) -> list[dict[str, str]]:
    runs = data.runs or []
    run_ids = {r.get("run_id") for r in runs}
    last = runs[-1] if runs else None
    read = sum(t["read"] for t in data.totals.values())
    quarantined = sum(sum(c.values()) for c in data.quarantine.values() if c is not None)
    silver = [f"{k} {n:,}" for k, n in data.silver_rows.items() if n is not None]
    newest = max(
        (h.last for h in data.history.values() if h is not None and h.last is not None),
        key=lambda c: c.at,
        default=None,
    )
    interval = ""
    if last is not None:
        start, end = last.get("interval_start"), last.get("interval_end")
        interval = (
            "no data interval (run by hand)"
            if start is None and end is None
            else f"data interval {fmt_time(start, False)} → {fmt_time(end, False)}"
        )
        interval = f"{fmt_time(last.get('finished_at') or last.get('started_at'), False)} · {interval}"
    return [
        {
            "label": "batch runs",
            "value": f"{len(run_ids):,}" if runs else "–",
            "sub": "none recorded" if not runs else "recorded in _meta/runs",
        },
        {
            "label": "last batch run",
            "value": ago(last.get("finished_at") or last.get("started_at"), data.generated_at) + " ago"
            if last
            else "–",
            "sub": interval,
        },
        {"label": "records read", "value": f"{read:,}" if runs else "–", "sub": "by batch runs, all sources"},
        {
            "label": "silver rows",
            "value": f"{sum(n or 0 for n in data.silver_rows.values()):,}",
            "sub": " · ".join(silver) or "no silver",
        },
        {
            "label": "silver last written",
            "value": ago(newest.at, data.generated_at) + " ago" if newest else "–",
            "sub": f"by the {newest.writer} path, {fmt_time(newest.at, False)}" if newest else "no commit read",
        },
        {"label": "quarantined", "value": f"{quarantined:,}", "sub": "records set aside with a reason"},
    ]


def quarantine_table(data: ReportData) -> dict[str, Any]:
    rows: list[list[Any]] = []
    for kind, counts in data.quarantine.items():
        if counts is None:
            rows.append([kind, "nothing quarantined (no quarantine table yet)", 0])
        elif not counts:
            rows.append([kind, "nothing quarantined", 0])
        rows += [[kind, reason, n] for reason, n in sorted((counts or {}).items())]
    return data_table("quarantine", ["source", "reason", "records"], rows, numeric=["records"])


def notes_table(data: ReportData) -> dict[str, Any] | None:
    rows = [[k, note, n] for k, c in data.notes.items() for note, n in sorted(c.items())]
    return data_table("notes", ["source", "note", "values"], rows, numeric=["values"]) if rows else None


def totals_table(data: ReportData) -> dict[str, Any]:
    rows = [[k, *(data.totals.get(k, Counter())[c] for c in RUN_COUNTERS)] for k in KINDS]
    return data_table("accounting", ["source", *RUN_COUNTERS], rows, numeric=RUN_COUNTERS)


def runs_table(data: ReportData) -> dict[str, Any] | None:
    if not data.runs:
        return None
    columns = ["run_id", "kind", "started_at", "seconds", "interval", *RUN_COUNTERS]
    rows = []
    order: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
    newest_first = sorted(data.runs, key=lambda r: (str(r.get("started_at") or ""), -order.get(str(r.get("kind")), 9)))
    for r in reversed(newest_first):
        started, finished = r.get("started_at"), r.get("finished_at")
        took = (finished - started).total_seconds() if started and finished else None
        run_id = str(r.get("run_id") or "")
        interval = (
            "by hand"
            if r.get("interval_start") is None and r.get("interval_end") is None
            else f"{fmt_time(r.get('interval_start'), False)} → {fmt_time(r.get('interval_end'), False)}"
        )
        rows.append(
            [
                {"text": run_id[:12], "v": run_id, "null": False, "title": run_id},
                r.get("kind"),
                {"text": fmt_time(started, False), "v": started.isoformat() if started else "", "null": False},
                None if took is None else round(took, 1),
                interval,
                *(r.get(c) for c in RUN_COUNTERS),
            ]
        )
    labels = {"run_id": "run", "started_at": "started (UTC)", "interval": "data interval (UTC)"}
    return data_table("runs", columns, rows, numeric=["seconds", *RUN_COUNTERS], labels=labels)


def writers_table(data: ReportData) -> dict[str, Any] | None:
    histories = [h for h in (data.history.get(k) for k in KINDS) if h is not None]
    if not histories:
        return None
    columns = [
        "source",
        "silver_rows",
        *(f"inserted_by_{s}" for s in WRITER_SERIES),
        "updated_by_stream",
        "updated_by_batch",
        "stream_commits",
        "batch_commits",
        "compactions",
        "last_write",
    ]
    labels = {
        "silver_rows": "rows",
        "inserted_by_stream": "by stream",
        "inserted_by_batch": "by batch",
        "inserted_by_other": "by other",
        "inserted_by_earlier": "earlier",
        "updated_by_stream": "updated by stream",
        "updated_by_batch": "updated by batch",
        "stream_commits": "stream commits",
        "batch_commits": "batch commits",
        "compactions": "compactions",
        "last_write": "last write (UTC)",
    }
    rows = []
    for h in histories:
        split = writer_rows(h)
        last = h.last
        rows.append(
            [
                h.kind,
                h.rows,
                *(split[s] for s in WRITER_SERIES),
                h.updated.get("stream", 0),
                h.updated.get("batch", 0),
                h.commit_counts.get("stream", 0),
                h.commit_counts.get("batch", 0),
                h.commit_counts.get("compaction", 0),
                f"{fmt_time(last.at, False)} ({last.writer})" if last else None,
            ]
        )
    numeric = [c for c in columns if c not in ("source", "last_write")]
    return data_table("writers", columns, rows, numeric=numeric, labels=labels)


def reconcile_sentences(data: ReportData) -> list[str]:
    """Per source, one sentence that puts the batch runs' counts next to what the stream path wrote."""
    out: list[str] = []
    for kind in KINDS:
        h, t = data.history.get(kind), data.totals.get(kind)
        if h is None:
            continue
        split = writer_rows(h)
        text = f"{kind}: silver holds {h.rows:,} rows — {split['stream']:,} inserted by the stream path, "
        text += f"{split['batch']:,} by the batch job"
        if split["other"]:
            text += f", {split['other']:,} by another writer"
        if split["earlier"]:
            text += f", {split['earlier']:,} by commits older than the history read"
        text += "."
        if t and t["read"]:
            written = t["inserted"] + t["updated"]
            text += (
                f" The batch runs read {t['read']:,} records: wrote {written:,}, collapsed {t['collapsed']:,} "
                f"(already in silver or re-sent) and quarantined {t['quarantined']:,}."
            )
            if split["stream"] and t["collapsed"] and not written:
                text += " The stream path had written those rows first, so batch found nothing new."
        out.append(text)
    return out


def freshness_table(data: ReportData) -> dict[str, Any]:
    last_run: dict[str, dt.datetime] = {}
    for r in data.runs or []:
        if isinstance(r.get("finished_at"), dt.datetime):
            last_run[str(r.get("kind"))] = r["finished_at"]
    rows = []
    for kind in KINDS:
        h = data.history.get(kind)
        last = h.last if h else None
        run = last_run.get(kind)
        rows.append(
            [
                kind,
                None if last is None else last.at,
                None if last is None else last.writer,
                None if last is None else ago(last.at, data.generated_at),
                run,
                None if run is None else ago(run, data.generated_at),
            ]
        )
    columns = ["source", "last_silver_write", "by", "age", "last_batch_run", "batch_age"]
    labels = {
        "last_silver_write": "last silver write (UTC)",
        "last_batch_run": "last batch run (UTC)",
        "batch_age": "age",
    }
    return data_table("freshness", columns, rows, labels=labels)


def profile_table(data: ReportData) -> dict[str, Any]:
    columns = [
        "source",
        "column",
        "type",
        "rows",
        "nulls",
        "null_share",
        "placeholders",
        "empty",
        "unparsed",
    ]
    rows = []
    for kind in KINDS:
        for p in data.profile.get(kind, []):
            share = {"text": f"{100 * p.null_share:.1f}%", "v": round(p.null_share, 6), "null": False}
            rows.append([kind, p.column, p.type, p.rows, p.nulls, share, p.placeholders, p.empties, p.unparsed])
    labels = {
        "null_share": "null %",
        "placeholders": "placeholders → null",
        "empty": "empty → null",
        "unparsed": "unparsed → null",
    }
    numeric = columns[3:]
    return data_table("profile", columns, rows, numeric=numeric, labels=labels)
