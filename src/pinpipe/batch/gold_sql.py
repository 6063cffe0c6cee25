"""The gold tables as DuckDB SQL over aggregate state: what incremental gold keeps, and how gold follows from it.

Who calls what: :mod:`pinpipe.batch.gold_state` builds the state from whole silver tables or updates it with
the joined rows a change removed and added (:func:`state_rows_sql`), folds a change into the state
(:func:`fold_sql`) and derives the nine tables from it (:func:`gold_from_state`). The DataFrame queries of
:mod:`pinpipe.batch.gold` remain the definition (and what Spark runs); these give identical tables (checked by
``tests/unit/test_gold_incremental.py`` over random histories).

The state is a multiset of keys with counts ``n`` (one table, rows told apart by ``state``); every count is a
number of joined rows, so a row that leaves silver subtracts exactly what it once added:

============  ==========================================  =======================================
state         key                                         serves
============  ==========================================  =======================================
cat_country   country, category                           top_category_by_country
cat_year      year (of geo.timestamp, 2018–2022), category  top_category_by_year
top_user      country, follower_count, poster_name        top_user_by_country, top_country_by_followers
cat_age       age_group, category                         top_category_by_age_group
followers     age_group, year (of date_joined), follower_count  the three medians (a histogram)
users         user_name, age, date_joined, year           a user counts while its n > 0 (looked up, not scanned)
users_year    year                                        users_joined_by_year: n = distinct users that year
============  ==========================================  =======================================

A median is read off the histogram: the smallest value whose cumulative count reaches ``ceil(total / 2)``.
"""

from __future__ import annotations

import pyarrow as pa

from pinpipe.batch.gold import JOIN_YEARS, POST_YEARS
from pinpipe.tables import TIMESTAMP

_S, _I = pa.string(), pa.int64()

KEY_FIELDS: tuple[pa.Field, ...] = (
    pa.field("state", _S, nullable=False),
    pa.field("country", _S),
    pa.field("category", _S),
    pa.field("poster_name", _S),
    pa.field("age_group", _S),
    pa.field("year", _I),
    pa.field("follower_count", _I),
    pa.field("user_name", _S),
    pa.field("age", _I),
    pa.field("date_joined", TIMESTAMP),
)
KEYS: tuple[str, ...] = tuple(f.name for f in KEY_FIELDS)
STATE_SCHEMA = pa.schema([*KEY_FIELDS, pa.field("n", _I, nullable=False)])
"""The Delta schema of the state table: the keys and the count (plus one sentinel row, ``state = 'meta'``)."""

_SQL_TYPES = {"year": "BIGINT", "follower_count": "BIGINT", "age": "BIGINT", "date_joined": "TIMESTAMPTZ"}

AGE_GROUP_SQL = (
    "CASE WHEN u.age >= 18 AND u.age <= 24 THEN '18-24' WHEN u.age >= 25 AND u.age <= 35 THEN '25-35' "
    "WHEN u.age >= 36 AND u.age <= 50 THEN '36-50' WHEN u.age > 50 THEN '+50' END"
)


def _select(state: str, source: str, where: str, sign: int | str, **columns: str) -> str:
    """One state's rows from ``source``: its key ``columns`` (the others null) and ``n`` (a sign or an expression)."""
    items = [f"'{state}' AS state"]
    for key in KEYS[1:]:
        items.append(
            f"{columns[key]} AS {key}" if key in columns else f"CAST(NULL AS {_SQL_TYPES.get(key, 'VARCHAR')}) AS {key}"
        )
    return f"SELECT {', '.join(items)}, CAST({sign} AS BIGINT) AS n FROM {source} WHERE {where}"


USER_KEY = ("user_name", "age", "date_joined", "year")
_SAME_USER = " AND ".join(f"s.{c} IS NOT DISTINCT FROM c.{c}" for c in USER_KEY)


def users_year_full_sql(state: str) -> str:
    """``users_year`` rows (distinct users per join year) of a whole state ``state``."""
    return _select("users_year", state, "state = 'users' GROUP BY year", "count(*)", year="year")


def users_year_change_sql(chain: str, change: str) -> str:
    """``users_year`` rows by which ``change`` moves the distinct users per year of the stored rows ``chain``: a
    user counts while the sum of its rows' ``n`` is positive, so only the users in ``change`` are looked up.
    Also ``after`` < 0 rows are kept out and counted by :func:`negative_users_sql`."""
    return _select(
        "users_year",
        f"({_users_before_after(chain, change)})",
        "true GROUP BY year HAVING sum(CAST(after > 0 AS BIGINT) - CAST(before > 0 AS BIGINT)) <> 0",
        "sum(CAST(after > 0 AS BIGINT) - CAST(before > 0 AS BIGINT))",
        year="year",
    )


def negative_users_sql(chain: str, change: str) -> str:
    return f"SELECT count(*) FROM ({_users_before_after(chain, change)}) WHERE after < 0"


def _users_before_after(chain: str, change: str) -> str:
    keys = ", ".join(USER_KEY)
    return (
        f"WITH c AS (SELECT {keys}, n FROM {change} WHERE state = 'users'), "
        f"o AS (SELECT {', '.join(f's.{k}' for k in USER_KEY)}, sum(s.n) AS n FROM {chain} s SEMI JOIN c ON {_SAME_USER} "
        f"WHERE s.state = 'users' GROUP BY ALL) "
        f"SELECT {', '.join(f'c.{k}' for k in USER_KEY)}, coalesce(s.n, 0) AS before, coalesce(s.n, 0) + c.n AS after "
        f"FROM c LEFT JOIN o s ON {_SAME_USER}"
    )


def state_rows_sql(pin: str, geo: str, user: str, sign: int) -> str:
    """One row per (joined row, state it counts in), with ``n = sign``, from the relations ``pin``, ``geo``,
    ``user`` (columns :data:`pinpipe.batch.gold.SILVER_COLUMNS`)."""
    post = f"post_year >= {POST_YEARS[0]} AND post_year <= {POST_YEARS[1]}"
    joined = f"join_year >= {JOIN_YEARS[0]} AND join_year <= {JOIN_YEARS[1]}"
    parts = [
        _select(
            "cat_country",
            "pg",
            "country IS NOT NULL AND category IS NOT NULL",
            sign,
            country="country",
            category="category",
        ),
        _select("cat_year", "pg", f"category IS NOT NULL AND {post}", sign, year="post_year", category="category"),
        _select(
            "top_user",
            "pg",
            "country IS NOT NULL AND follower_count IS NOT NULL",
            sign,
            country="country",
            follower_count="follower_count",
            poster_name="poster_name",
        ),
        _select(
            "cat_age",
            "pu",
            "age_group IS NOT NULL AND category IS NOT NULL",
            sign,
            age_group="age_group",
            category="category",
        ),
        _select(
            "followers",
            "pu",
            f"follower_count IS NOT NULL AND (age_group IS NOT NULL OR ({joined}))",
            sign,
            age_group="age_group",
            year="join_year",
            follower_count="follower_count",
        ),
        _select(
            "users",
            "pu",
            joined,
            sign,
            user_name="user_name",
            age="age",
            date_joined="date_joined",
            year="join_year",
        ),
    ]
    return (
        "WITH pg AS MATERIALIZED (SELECT p.category, p.poster_name, CAST(p.follower_count AS BIGINT) AS follower_count, "
        f'g.country, year(g."timestamp") AS post_year FROM {pin} p JOIN {geo} g ON p.ind = g.ind), '
        "pu AS MATERIALIZED (SELECT p.category, CAST(p.follower_count AS BIGINT) AS follower_count, u.user_name, "
        f"CAST(u.age AS BIGINT) AS age, u.date_joined, year(u.date_joined) AS join_year, {AGE_GROUP_SQL} AS age_group "
        f"FROM {pin} p JOIN {user} u ON p.ind = u.ind) " + " UNION ALL ".join(parts)
    )


def aggregate_sql(rows: str) -> str:
    """The rows of :func:`state_rows_sql` (or any union of them) summed per key; keys whose count is 0 dropped."""
    keys = ", ".join(KEYS)
    return f"SELECT {keys}, CAST(sum(n) AS BIGINT) AS n FROM ({rows}) GROUP BY {keys} HAVING sum(n) <> 0"


def fold_sql(state: str, change: str) -> str:
    """The state ``state`` (a relation of :data:`KEYS` + ``n``) plus the signed rows ``change``."""
    keys = ", ".join(KEYS)
    return aggregate_sql(f"SELECT {keys}, n FROM {state} UNION ALL SELECT {keys}, n FROM {change}")


def _top_category(state: str, group: str, source: str) -> str:
    return (
        f"SELECT {group}, category, n AS category_count FROM (SELECT {group}, category, n, rank() OVER "
        f"(PARTITION BY {group} ORDER BY n DESC) AS rnk FROM {source} WHERE state = '{state}') WHERE rnk = 1"
    )


def _median(source: str, groups: dict[str, str], where: str) -> str:
    select = ", ".join(f"{col} AS {alias}" for col, alias in groups.items())
    aliases = ", ".join(groups.values())
    return (
        f"WITH h AS (SELECT {select}, follower_count, sum(n) AS c FROM {source} WHERE state = 'followers' AND {where} "
        f"GROUP BY ALL), w AS (SELECT *, sum(c) OVER (PARTITION BY {aliases} ORDER BY follower_count ROWS BETWEEN "
        f"UNBOUNDED PRECEDING AND CURRENT ROW) AS cum, sum(c) OVER (PARTITION BY {aliases}) AS total FROM h) "
        f"SELECT {aliases}, min(follower_count) AS median_follower_count FROM w WHERE 2 * cum >= total GROUP BY {aliases}"
    )


def gold_from_state(source: str) -> dict[str, str]:
    """The SQL of each gold table over the state relation ``source`` (rows in no particular order)."""
    joined = f"year >= {JOIN_YEARS[0]} AND year <= {JOIN_YEARS[1]}"
    best = (
        f"SELECT country, max(follower_count) AS follower_count FROM {source} WHERE state = 'top_user' GROUP BY country"
    )
    return {
        "top_category_by_country": _top_category("cat_country", "country", source),
        "top_category_by_year": _top_category("cat_year", "year", source).replace(
            "SELECT year, category, n", "SELECT year AS post_year, category, n", 1
        ),
        "top_user_by_country": (
            "SELECT country, poster_name, follower_count FROM (SELECT country, poster_name, follower_count, rank() "
            f"OVER (PARTITION BY country ORDER BY follower_count DESC) AS rnk FROM {source} WHERE state = 'top_user') "
            "WHERE rnk = 1"
        ),
        "top_country_by_followers": (
            f"WITH best AS ({best}) SELECT country, follower_count FROM best "
            "WHERE follower_count = (SELECT max(follower_count) FROM best)"
        ),
        "top_category_by_age_group": _top_category("cat_age", "age_group", source),
        "median_followers_by_age_group": _median(source, {"age_group": "age_group"}, "age_group IS NOT NULL"),
        "users_joined_by_year": (
            f"SELECT year AS post_year, n AS number_users_joined FROM {source} WHERE state = 'users_year'"
        ),
        "median_followers_by_join_year": _median(source, {"year": "post_year"}, joined),
        "median_followers_by_age_group_and_join_year": _median(
            source, {"age_group": "age_group", "year": "post_year"}, f"age_group IS NOT NULL AND {joined}"
        ),
    }
