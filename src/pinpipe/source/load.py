"""Fill the source database with the bundled sample or generated rows, safely re-runnable.

Callers: ``pinpipe source init`` / ``pinpipe source show`` (:mod:`pinpipe.cli.source_cmd`), tests, benchmarks.

What was loaded is recorded in a small bookkeeping table, ``pinpipe_source_info`` (table name, origin, row
count), written in the same transaction as the rows. :func:`init_source` therefore knows whether the tables
already hold what was asked for (nothing to do), are empty or missing (load), or hold something else (refuse
unless ``replace``). A load interrupted half-way is rolled back, leaving empty tables that the next run fills.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pinpipe.errors import ConfigError
from pinpipe.source.database import count_rows, create_tables, existing_tables, insert_rows, redact, source_errors
from pinpipe.source.sample import SAMPLE_ROWS, load_sample
from pinpipe.synth.generate import GENERATOR_VERSION, check_size, generate
from pinpipe.tables import KINDS, RAW_TABLES, Kind

CHUNK_ROWS = 4096
"""Rows per executemany."""

_INFO = sa.Table(
    "pinpipe_source_info",
    sa.MetaData(),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("origin", sa.String(200), nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("loaded_at", sa.DateTime, nullable=False),
)


@dataclass(frozen=True)
class SampleOrigin:
    """The bundled real sample (2,475 / 2,504 / 2,727 rows)."""

    @property
    def token(self) -> str:
        return "sample/v1"

    def describe(self) -> str:
        return "the bundled real sample"

    def row_counts(self) -> dict[Kind, int]:
        return dict(SAMPLE_ROWS)

    def chunks(self) -> Iterator[tuple[Kind, list[tuple[Any, ...]]]]:
        for kind in KINDS:
            rows = [tuple(row.values()) for row in load_sample(kind)]
            for first in range(0, len(rows), CHUNK_ROWS):
                yield kind, rows[first : first + CHUNK_ROWS]


@dataclass(frozen=True)
class GeneratedOrigin:
    """``rows`` generated rows per table from ``seed`` (:mod:`pinpipe.synth.generate`)."""

    rows: int
    seed: int = 0

    def __post_init__(self) -> None:
        check_size(self.rows, self.seed)

    @property
    def token(self) -> str:
        return f"generated/v{GENERATOR_VERSION}/rows={self.rows}/seed={self.seed}"

    def describe(self) -> str:
        return f"generated rows (rows={self.rows}, seed={self.seed})"

    def row_counts(self) -> dict[Kind, int]:
        return dict.fromkeys(KINDS, self.rows)

    def chunks(self) -> Iterator[tuple[Kind, list[tuple[Any, ...]]]]:
        for block in generate(self.rows, self.seed):
            for kind in KINDS:
                yield kind, block.rows[kind]


Origin = SampleOrigin | GeneratedOrigin
Action = Literal["loaded", "replaced", "unchanged"]


def origin_from(name: str, rows: int | None = None, seed: int = 0) -> Origin:
    """The origin for ``--from NAME`` (``sample`` or ``generated``); ``rows`` is required for generated."""
    if name == "sample":
        if rows is not None:
            raise ConfigError("--rows applies to --from generated only", hint="drop --rows or add --from generated")
        return SampleOrigin()
    if name == "generated":
        return GeneratedOrigin(10_000 if rows is None else rows, seed)
    raise ConfigError(f"unknown data origin {name!r}", hint="use --from sample or --from generated")


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_source` did."""

    action: Action
    url: str  # password masked
    origin: str
    rows: dict[Kind, int]
    created: tuple[str, ...] = ()

    def message(self) -> str:
        counts = ", ".join(f"{RAW_TABLES[k].name} {n:,}" for k, n in self.rows.items())
        if self.action == "unchanged":
            return f"{self.url} already holds {self.origin} ({counts} rows): nothing to do"
        verb = "reloaded" if self.action == "replaced" else "loaded"
        made = f"created {', '.join(self.created)}; " if self.created else ""
        return f"{made}{verb} {self.origin} into {self.url} ({counts} rows)"


ProgressCallback = Callable[[Kind, int], None]
"""Called after each chunk with the kind and the number of rows just written."""


def init_source(
    engine: Engine, origin: Origin, *, replace: bool = False, progress: ProgressCallback | None = None
) -> InitReport:
    """Create the three tables where missing and load ``origin`` into them; see the module docstring."""
    url = redact(engine.url)
    with source_errors(engine):
        with engine.begin() as conn:
            present = existing_tables(conn)
            state = _state(conn) if present else {}
            counts = {kind: count_rows(conn, kind) for kind in KINDS if RAW_TABLES[kind].name in present}
        expected = origin.row_counts()
        if (
            not replace
            and len(present) == len(KINDS)
            and all(
                state.get(RAW_TABLES[k].name) == (origin.token, expected[k]) == (origin.token, counts[k]) for k in KINDS
            )
        ):
            return InitReport("unchanged", url, origin.describe(), expected)
        if not replace and any(counts.values()):
            held = ", ".join(
                f"{RAW_TABLES[k].name} {n:,} rows ({_origin_text(state.get(RAW_TABLES[k].name))})"
                for k, n in counts.items()
            )
            raise ConfigError(
                f"the source tables in {url} already hold other rows: {held}",
                hint="add --replace to drop and reload them, or point --db at another database",
            )
        with engine.begin() as conn:
            created = create_tables(conn, replace=replace)
            _INFO.create(conn, checkfirst=True)
        with engine.begin() as conn:
            conn.execute(_INFO.delete())
            for kind in KINDS:
                conn.execute(sa.delete(sa.table(RAW_TABLES[kind].name)))
            for kind, chunk in origin.chunks():
                insert_rows(conn, kind, chunk)
                if progress is not None:
                    progress(kind, len(chunk))
            now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            conn.execute(
                sa.insert(_INFO),
                [
                    {
                        "table_name": RAW_TABLES[k].name,
                        "origin": origin.token,
                        "row_count": expected[k],
                        "loaded_at": now,
                    }
                    for k in KINDS
                ],
            )
    action: Action = "replaced" if replace and present else "loaded"
    return InitReport(action, url, origin.describe(), expected, tuple(created))


def _state(conn: Connection) -> dict[str, tuple[str, int]]:
    if not sa.inspect(conn).has_table(_INFO.name):
        return {}
    return {row.table_name: (row.origin, row.row_count) for row in conn.execute(sa.select(_INFO))}


def _origin_text(state: tuple[str, int] | None) -> str:
    return "loaded outside pinpipe" if state is None else state[0]


@dataclass(frozen=True)
class TableStatus:
    """One source table as ``pinpipe source show`` reports it."""

    table: str
    rows: int | None  # None: the table does not exist
    origin: str | None


def show_source(engine: Engine) -> list[TableStatus]:
    """Row counts (and what was loaded, if pinpipe loaded it) of the three tables."""
    with source_errors(engine), engine.connect() as conn:
        present = existing_tables(conn)
        state = _state(conn) if present else {}
        return [
            TableStatus(
                RAW_TABLES[k].name,
                count_rows(conn, k) if RAW_TABLES[k].name in present else None,
                state[RAW_TABLES[k].name][0] if RAW_TABLES[k].name in state else None,
            )
            for k in KINDS
        ]
