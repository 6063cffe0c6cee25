"""Chart specs for the HTML report: what each gold table and data-quality count looks like as a bar chart.

Called by :func:`pinpipe.report.html.render_report`; the specs are embedded in the page as JSON and drawn by
``assets/report.js``. A spec is a plain dict::

    {"id": "...", "table": "<gold table>" | None, "title": "...", "subtitle": "...", "type": "hbar" | "vbar",
     "unit": "posts", "category_title": "join year", "value_title": "users joined",
     "bars": [{"label": "...", "note": "...", "key": "colour key", "value": 1}]}       # hbar, vbar
    {..., "type": "grouped" | "stacked", "series": ["2015", ...], "groups": [{"label": "18-24", "values": [1, None]}]}
    {..., "type": "line", "series": ["pin", ...], "points": [{"x": "2024-08-18", "values": [1, None]}],
     "format": "int" | "percent"}

``grouped`` draws vertical bars side by side, ``stacked`` horizontal bars in segments, ``line`` a time series
(the browser lets the reader zoom it by dragging across it). Subtitles that mention years take them from the
data (:func:`year_span`), never from the specification's nominal range.

Tables with one row per country (hundreds of rows) are summarised for the chart (categories by number of
countries; the countries whose top poster has the most followers); the full table is printed below the chart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from pinpipe.batch.gold import AGE_GROUPS
from pinpipe.tables import Kind

TOP_COUNTRIES = 15
"""How many countries the top-user chart shows."""

TITLES: dict[str, tuple[str, str]] = {
    "top_category_by_country": (
        "Most popular category per country",
        "Number of countries where each category is the most posted (a tie counts for every tied category).",
    ),
    "top_category_by_year": (
        "Most popular category per year",
        "Posts in the top category of each year of the post timestamp, {years} (ties shown side by side).",
    ),
    "top_user_by_country": (
        "Most-followed poster per country",
        "Follower count of each country's most-followed poster; the countries with the highest counts.",
    ),
    "top_country_by_followers": (
        "Country with the most-followed poster",
        "The country (ties kept) whose top poster has the most followers.",
    ),
    "top_category_by_age_group": (
        "Most popular category per age group",
        "Posts in the top category of each age group (ties shown side by side).",
    ),
    "median_followers_by_age_group": (
        "Median follower count per age group",
        "Exact lower median of the posters' follower counts, over posts joined to their users.",
    ),
    "users_joined_by_year": (
        "Users joined per year",
        "Distinct users (name, age, date joined) by the year they joined, {years}.",
    ),
    "median_followers_by_join_year": (
        "Median follower count by join year",
        "Exact lower median of follower counts of posts, by the year their user joined, {years}.",
    ),
    "median_followers_by_age_group_and_join_year": (
        "Median follower count by age group and join year",
        "Exact lower median per age group, one bar per join year ({years}).",
    ),
}


AXES: dict[str, tuple[str, str]] = {
    "top_category_by_country": ("category", "countries"),
    "top_category_by_year": ("year posted · category", "posts"),
    "top_user_by_country": ("country · poster", "followers"),
    "top_country_by_followers": ("country", "followers"),
    "top_category_by_age_group": ("age group · category", "posts"),
    "median_followers_by_age_group": ("age group", "median followers"),
    "users_joined_by_year": ("join year", "users joined"),
    "median_followers_by_join_year": ("join year", "median followers"),
    "median_followers_by_age_group_and_join_year": ("age group", "median followers"),
}
"""The (category axis, value axis) titles of each gold chart: what the reader sees instead of column names."""

COLUMN_LABELS: dict[str, dict[str, str]] = {
    "top_category_by_year": {"post_year": "year posted"},
    "users_joined_by_year": {"post_year": "join year", "number_users_joined": "users joined"},
    "median_followers_by_join_year": {"post_year": "join year"},
    "median_followers_by_age_group_and_join_year": {"post_year": "join year"},
}
"""Table headers shown for gold columns whose names mislead (``post_year`` holds the join year in three tables);
the CSV download keeps the real column names."""


def year_span(years: list[Any]) -> str:
    """``2015–2017`` from the years a table holds (``2016`` for one, ``no years`` for none)."""
    values = sorted({int(y) for y in years if y is not None})
    if not values:
        return "no years"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _spec(chart_id: str, table: str | None, kind: str, unit: str, **rest: Any) -> dict[str, Any]:
    title, subtitle = TITLES.get(chart_id, (chart_id, ""))
    x_title, y_title = AXES.get(chart_id, ("", unit))
    spec = {"id": chart_id, "table": table, "title": title, "subtitle": subtitle, "type": kind, "unit": unit}
    return {**spec, "category_title": x_title, "value_title": y_title, **rest}


def _bars(rows: list[dict[str, Any]], label: str, value: str, note: str | None = None) -> list[dict[str, Any]]:
    """One bar per row; the ``note`` column (a category) also picks the bar's colour."""
    return [
        {
            "label": str(r[label]),
            "note": "" if note is None else str(r[note] or ""),
            "key": "" if note is None else str(r[note] or ""),
            "value": r[value],
        }
        for r in rows
        if r[value] is not None
    ]


def gold_chart(name: str, table: pa.Table) -> dict[str, Any]:
    """The chart spec of one gold table."""
    spec = _gold_chart(name, table)
    if "{years}" in spec["subtitle"]:
        spec["subtitle"] = spec["subtitle"].replace("{years}", year_span(table.column("post_year").to_pylist()))
    return spec


def _gold_chart(name: str, table: pa.Table) -> dict[str, Any]:
    rows = table.to_pylist()
    if name == "top_category_by_country":
        per_category = Counter(r["category"] for r in rows)
        bars = [
            {"label": c, "note": "", "key": c, "value": n}
            for c, n in sorted(per_category.items(), key=lambda x: (-x[1], x[0]))
        ]
        return _spec(name, name, "hbar", "countries", bars=bars)
    if name == "top_user_by_country":
        best: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["country"] not in best:
                best[r["country"]] = {
                    "label": r["country"],
                    "note": r["poster_name"] or "",
                    "value": r["follower_count"],
                }
            elif r["poster_name"]:
                best[r["country"]]["note"] += f", {r['poster_name']}"
        top = sorted(best.values(), key=lambda b: (-b["value"], b["label"]))[:TOP_COUNTRIES]
        spec = _spec(name, name, "hbar", "followers", bars=top)
        spec["subtitle"] += f" Top {len(top)} of {len(best)} countries."
        return spec
    if name == "top_country_by_followers":
        return _spec(name, name, "hbar", "followers", bars=_bars(rows, "country", "follower_count"))
    if name in ("top_category_by_year", "top_category_by_age_group"):
        group = "post_year" if name == "top_category_by_year" else "age_group"
        return _spec(name, name, "hbar", "posts", bars=_bars(rows, group, "category_count", "category"))
    if name == "median_followers_by_age_group_and_join_year":
        years = sorted({r["post_year"] for r in rows})
        cells = {(r["age_group"], r["post_year"]): r["median_follower_count"] for r in rows}
        groups = [
            {"label": g, "values": [cells.get((g, y)) for y in years]}
            for g in AGE_GROUPS
            if any((g, y) in cells for y in years)
        ]
        return _spec(name, name, "grouped", "followers", series=[str(y) for y in years], groups=groups, wide=True)
    if name == "users_joined_by_year":
        return _spec(name, name, "vbar", "users", bars=_bars(rows, "post_year", "number_users_joined"))
    group = "age_group" if name == "median_followers_by_age_group" else "post_year"
    return _spec(name, name, "vbar", "followers", bars=_bars(rows, group, "median_follower_count"))


def quality_charts(
    quarantine: Mapping[Kind, Counter[str] | None], notes: Mapping[Kind, Counter[str]]
) -> list[dict[str, Any]]:
    """Charts of the data-quality section (only for counts that exist and are not all zero)."""
    charts: list[dict[str, Any]] = []
    quarantined = [
        {"label": f"{kind} · {reason}", "note": "", "key": kind, "value": n}
        for kind, counts in quarantine.items()
        for reason, n in sorted((counts or {}).items(), key=lambda x: (-x[1], x[0]))
        if n
    ]
    if quarantined:
        charts.append(
            _spec(
                "quarantine",
                None,
                "hbar",
                "records",
                bars=quarantined,
                title="Quarantined records by reason",
                subtitle="Records that could not become silver rows, per source (<lake>/quarantine/<source>).",
            )
        )
    noted = [
        {"label": f"{kind} · {note}", "note": "", "key": kind, "value": n}
        for kind, counts in notes.items()
        for note, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))
        if n
    ]
    if noted:
        charts.append(
            _spec(
                "notes",
                None,
                "hbar",
                "values",
                bars=noted,
                title="Data-quality notes",
                subtitle="Values cleaned to null (placeholders, empty strings, unparsed follower counts), all runs.",
            )
        )
    return charts
