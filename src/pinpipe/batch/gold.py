"""The gold layer: the nine analysis tables of the specification (§6), computed from the silver tables.

Who calls what: the Spark batch job (:mod:`pinpipe.batch.spark_job`) turns the three silver tables into
DataFrames, calls :func:`compute_gold` and writes each result to ``<lake>/gold/<name>``; on DuckDB the batch job
keeps gold up to date incrementally instead (:mod:`pinpipe.batch.gold_state`, SQL in
:mod:`pinpipe.batch.gold_sql`), and these queries are the definition it is tested against. ``pinpipe results``
and the HTML report (:mod:`pinpipe.report.html`) read the tables back with :func:`read_gold` /
:func:`read_gold_tables`; :func:`write_gold` writes given tables.

The queries use only the PySpark DataFrame API through ``engine.F`` and ``engine.Window``, so the same code runs
on SQLFrame/DuckDB and on real PySpark; results are collected as Arrow, cast to :data:`GOLD_SCHEMAS` and sorted
in Arrow, so both engines return identical tables.

Decisions (the contract, tested in ``tests/unit/test_gold.py``):

- joins are inner joins on ``ind``: pin⋈geo for the first four tables, pin⋈user for the other five;
- "top" keeps ties (``rank() == 1``); rows whose group or counted value is null are left out (a null country,
  category, age or year is not a group; a null ``follower_count`` is not a candidate for "most followers");
- a median is the exact lower median: the non-null values in ascending order, element ``ceil(n / 2)``;
- age groups ``18-24``, ``25-35``, ``36-50`` (inclusive) and ``+50`` (older); younger than 18 is in no group;
- ``post_year`` is the year of ``geo.timestamp`` (2018–2022) in ``top_category_by_year`` and the year of
  ``user.date_joined`` (2015–2020) in the three join-year tables;
- ``users_joined_by_year`` counts distinct ``(user_name, age, date_joined)`` among the joined rows;
- rows are sorted by their group columns (age groups in natural order), then by the remaining columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.engine import Engine
from pinpipe.errors import InvalidInputError, NotFoundError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.tables import Kind

DataFrame = Any
"""A PySpark or SQLFrame DataFrame (both expose the same API)."""

AGE_GROUPS: tuple[str, ...] = ("18-24", "25-35", "36-50", "+50")
"""Age groups in their natural order (the sort order of every table that has an ``age_group`` column)."""

POST_YEARS = (2018, 2022)
"""Inclusive window of ``year(geo.timestamp)`` for ``top_category_by_year``."""

JOIN_YEARS = (2015, 2020)
"""Inclusive window of ``year(user.date_joined)`` for the join-year tables."""

_S = pa.string()
_I = pa.int64()

GOLD_SCHEMAS: dict[str, pa.Schema] = {
    "top_category_by_country": pa.schema([("country", _S), ("category", _S), ("category_count", _I)]),
    "top_category_by_year": pa.schema([("post_year", _I), ("category", _S), ("category_count", _I)]),
    "top_user_by_country": pa.schema([("country", _S), ("poster_name", _S), ("follower_count", _I)]),
    "top_country_by_followers": pa.schema([("country", _S), ("follower_count", _I)]),
    "top_category_by_age_group": pa.schema([("age_group", _S), ("category", _S), ("category_count", _I)]),
    "median_followers_by_age_group": pa.schema([("age_group", _S), ("median_follower_count", _I)]),
    "users_joined_by_year": pa.schema([("post_year", _I), ("number_users_joined", _I)]),
    "median_followers_by_join_year": pa.schema([("post_year", _I), ("median_follower_count", _I)]),
    "median_followers_by_age_group_and_join_year": pa.schema(
        [("age_group", _S), ("post_year", _I), ("median_follower_count", _I)]
    ),
}
"""Column names and Arrow types of each gold table (the Delta schema under ``<lake>/gold/<name>``)."""

GOLD_TABLES: tuple[str, ...] = tuple(GOLD_SCHEMAS)
"""The nine gold table names, in specification order."""

SILVER_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "pin": ("ind", "category", "poster_name", "follower_count"),
    "geo": ("ind", "country", "timestamp"),
    "user": ("ind", "user_name", "age", "date_joined"),
}
"""The silver columns the queries read: callers may load only these (the batch job does)."""

GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "top_category_by_country": ("country",),
    "top_category_by_year": ("post_year",),
    "top_user_by_country": ("country",),
    "top_country_by_followers": (),
    "top_category_by_age_group": ("age_group",),
    "median_followers_by_age_group": ("age_group",),
    "users_joined_by_year": ("post_year",),
    "median_followers_by_join_year": ("post_year",),
    "median_followers_by_age_group_and_join_year": ("age_group", "post_year"),
}
"""The columns each table is grouped by (the report charts one bar per group)."""


# ---------------------------------------------------------------------------------------------- queries


class _Queries:
    """The nine queries over one engine's ``F``/``Window``; each method returns a DataFrame."""

    def __init__(self, engine: Engine, silver: Mapping[Kind, DataFrame]) -> None:
        self.F = engine.F
        self.W = engine.Window
        F = self.F
        missing = [kind for kind in ("pin", "geo", "user") if kind not in silver]
        if missing:
            raise InvalidInputError(
                f"compute_gold needs the silver tables pin, geo and user; missing: {', '.join(missing)}",
                hint="pass one DataFrame per kind (Engine.frame over each silver table)",
            )
        pin = silver["pin"].select(
            F.col("ind"), F.col("category"), F.col("poster_name"), F.col("follower_count").cast("bigint")
        )
        geo = silver["geo"].select(F.col("ind"), F.col("country"), F.year(F.col("timestamp")).alias("post_year"))
        user = silver["user"].select(
            F.col("ind"),
            F.col("user_name"),
            F.col("age"),
            F.col("date_joined"),
            F.year(F.col("date_joined")).alias("post_year"),
            self._age_group(F.col("age")).alias("age_group"),
        )
        self.pin_geo = pin.join(geo, on="ind", how="inner")
        self.pin_user = pin.join(user, on="ind", how="inner")

    def _age_group(self, age: Any) -> Any:
        F = self.F
        return (
            F.when((age >= 18) & (age <= 24), F.lit("18-24"))
            .when((age >= 25) & (age <= 35), F.lit("25-35"))
            .when((age >= 36) & (age <= 50), F.lit("36-50"))
            .when(age > 50, F.lit("+50"))
        )

    def _not_null(self, df: DataFrame, *columns: str) -> DataFrame:
        condition = self.F.col(columns[0]).isNotNull()
        for name in columns[1:]:
            condition = condition & self.F.col(name).isNotNull()
        return df.filter(condition)  # one filter: each DataFrame operation costs SQLFrame a plan copy

    def _top_category(self, df: DataFrame, group: str) -> DataFrame:
        """Per ``group``, the categories with the most rows (ties kept)."""
        F = self.F
        counts = (
            self._not_null(df, group, "category")
            .groupBy(group, "category")
            .agg(F.count(F.lit(1)).alias("category_count"))
        )
        window = self.W.partitionBy(group).orderBy(F.col("category_count").desc())
        return (
            counts.withColumn("rnk", F.rank().over(window))
            .filter(F.col("rnk") == 1)
            .select(group, "category", "category_count")
        )

    def _lower_median(self, df: DataFrame, *groups: str) -> DataFrame:
        """Per group, the exact lower median of the non-null ``follower_count`` values: element ceil(n/2)."""
        F = self.F
        values = self._not_null(df, *groups, "follower_count")
        ordered = self.W.partitionBy(*groups).orderBy(F.col("follower_count").asc())
        whole = self.W.partitionBy(*groups)
        ranked = values.withColumns({"rn": F.row_number().over(ordered), "n": F.count(F.lit(1)).over(whole)})
        # rn == ceil(n / 2) in integer arithmetic: 2*rn >= n and 2*(rn-1) < n
        middle = ranked.filter((F.col("rn") * 2 >= F.col("n")) & ((F.col("rn") - 1) * 2 < F.col("n")))
        return middle.select(*groups, F.col("follower_count").alias("median_follower_count"))

    def _in_years(self, df: DataFrame, years: tuple[int, int]) -> DataFrame:
        return df.filter((self.F.col("post_year") >= years[0]) & (self.F.col("post_year") <= years[1]))

    def top_category_by_country(self) -> DataFrame:
        return self._top_category(self.pin_geo, "country")

    def top_category_by_year(self) -> DataFrame:
        return self._top_category(self._in_years(self.pin_geo, POST_YEARS), "post_year")

    def top_user_by_country(self) -> DataFrame:
        F = self.F
        posts = self._not_null(self.pin_geo, "country", "follower_count")
        window = self.W.partitionBy("country").orderBy(F.col("follower_count").desc())
        return (
            posts.withColumn("rnk", F.rank().over(window))
            .filter(F.col("rnk") == 1)
            .select("country", "poster_name", "follower_count")
            .distinct()
        )

    def top_country_by_followers(self) -> DataFrame:
        F = self.F
        best = self.top_user_by_country().groupBy("country").agg(F.max("follower_count").alias("follower_count"))
        overall = best.agg(F.max("follower_count").alias("top"))
        return best.join(overall, best["follower_count"] == overall["top"], "inner").select("country", "follower_count")

    def top_category_by_age_group(self) -> DataFrame:
        return self._top_category(self.pin_user, "age_group")

    def median_followers_by_age_group(self) -> DataFrame:
        return self._lower_median(self.pin_user, "age_group")

    def users_joined_by_year(self) -> DataFrame:
        F = self.F
        users = self._in_years(self.pin_user, JOIN_YEARS).select("user_name", "age", "date_joined", "post_year")
        return users.distinct().groupBy("post_year").agg(F.count(F.lit(1)).alias("number_users_joined"))

    def median_followers_by_join_year(self) -> DataFrame:
        return self._lower_median(self._in_years(self.pin_user, JOIN_YEARS), "post_year")

    def median_followers_by_age_group_and_join_year(self) -> DataFrame:
        return self._lower_median(self._in_years(self.pin_user, JOIN_YEARS), "age_group", "post_year")


def sorted_gold(name: str, table: pa.Table) -> pa.Table:
    """Cast ``table`` to the gold schema and sort it: group columns first (age groups in natural order)."""
    schema = GOLD_SCHEMAS[name]
    table = table.select(schema.names).cast(schema)
    groups = GROUP_COLUMNS[name]
    keys = [*groups, *(c for c in schema.names if c not in groups)]
    sort_table = table
    sort_keys: list[tuple[str, str]] = []
    for column in keys:
        if column == "age_group":
            rank = pc.index_in(table["age_group"], value_set=pa.array(AGE_GROUPS))
            sort_table = sort_table.append_column("__age_rank", rank)
            sort_keys.append(("__age_rank", "ascending"))
        else:
            sort_keys.append((column, "ascending"))
    order = pc.sort_indices(sort_table, sort_keys=sort_keys)  # nulls last
    return table.take(order)


def compute_gold(engine: Engine, silver: Mapping[Kind, DataFrame]) -> dict[str, pa.Table]:
    """The nine gold tables from the silver DataFrames (``{"pin": df, "geo": df, "user": df}``).

    Called by the batch job after silver is up to date; returns ``{name: table}`` in :data:`GOLD_TABLES` order,
    each table exactly :data:`GOLD_SCHEMAS` ``[name]``, sorted. Runs on any :class:`Engine`.
    """
    queries = _Queries(engine, silver)
    compute: dict[str, Callable[[], DataFrame]] = {name: getattr(queries, name) for name in GOLD_TABLES}
    return {name: sorted_gold(name, engine.to_arrow(compute[name]())) for name in GOLD_TABLES}


def compute_gold_from_arrow(engine: Engine, silver: Mapping[Kind, pa.Table]) -> dict[str, pa.Table]:
    """:func:`compute_gold` over silver Arrow tables, through :meth:`Engine.collect` (the same queries; on DuckDB
    their SQL is generated once per engine)."""

    def build(frames: Mapping[str, DataFrame]) -> dict[str, DataFrame]:
        queries = _Queries(engine, frames)  # type: ignore[arg-type]
        return {name: getattr(queries, name)() for name in GOLD_TABLES}

    inputs: dict[str, pa.Table] = {kind: table for kind, table in silver.items()}
    collected = engine.collect("gold", inputs, build)
    return {name: sorted_gold(name, collected[name]) for name in GOLD_TABLES}


# ---------------------------------------------------------------------------------------------- Delta I/O


def write_gold(lake: Lake, gold: Mapping[str, pa.Table]) -> list[str]:
    """Replace each ``<lake>/gold/<name>`` Delta table with ``gold[name]`` unless it holds these rows already.

    Gold is recomputed from the whole of silver, so an overwrite is the idempotent write. Returns the names of
    the tables that were committed.
    """

    return [name for name, table in gold.items() if delta.overwrite_if_changed(lake, table, "gold", name)]


def read_gold_tables(lake: Lake, *, required: bool = True) -> dict[str, pa.Table]:
    """The gold tables present under ``<lake>/gold/`` as Arrow, in :data:`GOLD_TABLES` order.

    With ``required`` (the default) a lake without every gold table raises :class:`InvalidInputError` naming
    the missing tables; otherwise the missing ones are left out.
    """

    found: dict[str, pa.Table] = {}
    for name in GOLD_TABLES:
        table = delta.read_table(lake, "gold", name)
        if table is not None:
            found[name] = sorted_gold(name, table)
    missing = [name for name in GOLD_TABLES if name not in found]
    if required and missing:
        what = "no gold tables" if len(missing) == len(GOLD_TABLES) else "gold tables missing: " + ", ".join(missing)
        raise NotFoundError(
            f"the lake {lake.url} has {what}",
            hint=f"run `pinpipe batch --lake {lake.url}` first to compute them",
            lake=lake.url,
            missing=missing,
        )
    return found


def read_gold(lake: Lake) -> dict[str, list[dict[str, Any]]]:
    """``{table: [row objects]}`` with exactly the gold table and column names (what ``pinpipe results`` prints)."""
    return {name: table.to_pylist() for name, table in read_gold_tables(lake).items()}
