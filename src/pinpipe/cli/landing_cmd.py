"""``pinpipe landing expire``: show (``--dry-run``) or delete the landed objects past the landing retention that
the batch has committed (a thin shell over :mod:`pinpipe.lake.expiry`).

The retention comes from ``landing.retention_ms`` / ``landing.retention_bytes`` (``PINPIPE__LANDING__...``,
``[landing]`` in ``pinpipe.toml``), or from ``--older-than DURATION`` / ``--retention-bytes N`` for this run. With
neither set it fails (exit 2) rather than doing nothing silently. It may run while the sink and the batch run.
``pinpipe batch`` calls :func:`expire_after_batch` after its run when a retention is set and
``landing.expire_with_batch`` is on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from pinpipe.errors import ConfigError

if TYPE_CHECKING:
    from pinpipe.config import LandingSettings
    from pinpipe.lake.expiry import ExpiryPolicy, ExpiryResult
    from pinpipe.lake.store import Lake

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)


def parse_duration_ms(value: str, flag: str) -> int:
    """``7d``, ``12h``, ``30m``, ``90s``, ``500ms``, ``2w`` → milliseconds; ConfigError naming ``flag`` otherwise."""
    match = _DURATION.match(value)
    if match is None:
        raise ConfigError(
            f"{flag} {value!r} is not a duration",
            hint="give a whole number and a unit: ms, s, m, h, d or w (e.g. 7d, 12h, 90s)",
        )
    return int(match[1]) * _UNITS_MS[match[2].lower()]


def run_expiry(lake: Lake, prefix: str, policy: ExpiryPolicy, *, dry_run: bool) -> ExpiryResult:
    from pinpipe.lake import expiry

    plans = expiry.plan(lake, prefix, policy)
    if dry_run:
        return expiry.ExpiryResult(True, plans)
    return expiry.expire(lake, prefix, plans)


def as_dict(result: ExpiryResult) -> dict[str, Any]:
    """The pass as JSON: per partition what went (or would go), and why what is due stays."""
    partitions: list[dict[str, Any]] = []
    for p in result.plans:
        done = [o for o in result.expired if (o.topic, o.partition) == (p.topic, p.partition)]
        entry: dict[str, object] = {
            "topic": p.topic,
            "partition": p.partition,
            "batch_position": p.position,
            "objects": len(p.due),
            "bytes": sum(o.bytes for o, _ in p.due),
            "first_offset": p.due[0][0].start if p.due else None,
            "end_offset": p.end,
            "reasons": sorted({r for _, r in p.due}),
            "held": p.held,
            "kept_objects": len(p.present) - len(p.due),
            "finished_interrupted": len(p.leftover),
        }
        if not result.dry_run:
            entry["objects"] = len(done)
            entry["records"] = sum(o.records for o in done)
            entry["bytes"] = sum(o.bytes for o in done)
            entry["end_offset"] = done[-1].end if done else None
        partitions.append(entry)
    return {"dry_run": result.dry_run, "partitions": partitions}


def print_result(result: ExpiryResult) -> None:
    from pinpipe.cli import console

    verb = "would expire" if result.dry_run else "expired"
    for p in as_dict(result)["partitions"]:
        where = f"topic {p['topic']} partition {p['partition']}"
        if p["objects"]:
            records = f"{p['records']:,} records, " if "records" in p else ""
            console.print(
                f"{verb}: {where} {p['objects']} objects (offsets {p['first_offset']} to {p['end_offset'] - 1}, "
                f"{records}{p['bytes']:,} bytes; {'/'.join(p['reasons'])})",
                highlight=False,
                soft_wrap=True,
            )
        if p["held"] == "uncommitted":
            position = p["batch_position"]
            console.print(
                f"kept: {where} has due objects the batch has not committed ("
                + ("it never committed here" if position is None else f"its position: {position}")
                + "); `pinpipe batch` first",
                highlight=False,
                soft_wrap=True,
            )
    total = len(result.expired) if not result.dry_run else sum(len(p.due) for p in result.plans)
    records = f" ({sum(o.records for o in result.expired):,} records)" if not result.dry_run else ""
    finished = f"; finished {len(result.finished)} left by an interrupted pass" if result.finished else ""
    console.print(f"{verb} {total} landed objects{records}{finished}", highlight=False)


def expire_after_batch(lake: Lake, prefix: str, landing: LandingSettings) -> None:
    """The expiry pass ``pinpipe batch`` runs after its run (only when a retention is set and
    ``landing.expire_with_batch``; otherwise the expiry code is not even imported)."""
    if not landing.expire_with_batch or (landing.retention_ms < 0 and landing.retention_bytes < 0):
        return
    from pinpipe.lake.expiry import ExpiryPolicy

    print_result(run_expiry(lake, prefix, ExpiryPolicy.from_settings(landing), dry_run=False))


def register(app: typer.Typer) -> None:
    from pinpipe.cli.typer_app import PinpipeTyper

    group = PinpipeTyper(help="Expire landed objects the batch has committed.", no_args_is_help=True)
    app.add_typer(group, name="landing")

    @group.command("expire")
    def expire_command(
        lake_url: Annotated[
            str | None,
            typer.Option("--lake", help="Lake: a path, file://DIR or s3://BUCKET/PREFIX (default: lake.url)."),
        ] = None,
        older_than: Annotated[
            str | None,
            typer.Option(
                "--older-than", help="Expire objects older than this (7d, 12h, 90s…; default: landing.retention_ms)."
            ),
        ] = None,
        retention_bytes: Annotated[
            int | None,
            typer.Option(
                "--retention-bytes", help="Bytes a partition keeps at most (default: landing.retention_bytes)."
            ),
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be expired.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the pass as JSON.")] = False,
    ) -> None:
        """Delete landed objects past the landing retention that the batch has committed (counts recorded first)."""
        from pinpipe.config import load_settings
        from pinpipe.lake.expiry import ExpiryPolicy
        from pinpipe.lake.store import open_lake

        retention_ms = parse_duration_ms(older_than, "--older-than") if older_than is not None else None
        if retention_bytes is not None and retention_bytes < 0:
            raise ConfigError(f"--retention-bytes {retention_bytes} is negative", hint="give 0 or more bytes")
        settings = load_settings(
            {
                "lake": {"url": lake_url},
                "landing": {"retention_ms": retention_ms, "retention_bytes": retention_bytes},
            }
        )
        policy = ExpiryPolicy.from_settings(settings.landing)
        if not policy.enabled:
            raise ConfigError(
                "no landing retention is set: landed objects are kept forever",
                hint="pass --older-than (e.g. 7d) or --retention-bytes, or set landing.retention_ms "
                "(PINPIPE__LANDING__RETENTION_MS)",
            )
        lake = open_lake(settings.lake.url, settings.lake, access="read")
        result = run_expiry(lake, settings.prefix, policy, dry_run=dry_run)
        if as_json:
            typer.echo(orjson.dumps(as_dict(result), option=orjson.OPT_INDENT_2).decode())
        else:
            print_result(result)
