"""``pinpipe log verify``, ``repair`` and ``retention``: find corrupt records in the embedded log, skip one, and
show (or apply) what retention deletes.

A thin shell over :func:`pinpipe.log.scan.verify`, :func:`pinpipe.log.scan.repair` and
:mod:`pinpipe.log.retention`.

- ``verify`` checks every indexed record of every partition (CRC, offset, length) and every consumer group's
  committed position against the data; it prints one line per corrupt record (topic, partition, offset, why)
  with the repair command for it, and exits 65 if there is any, 0 otherwise. It may run while the pipeline runs.
- ``repair`` skips the named corrupt records — only ones that ``verify`` reports — and records them in
  ``DIR/skipped.json``; readers then step over them and ``pinpipe accounting`` reports them as skipped. Their
  content is lost: re-send the affected posts from the source if you can. It may run while the pipeline runs.
- ``retention --dry-run`` prints what a retention pass would delete now under the effective ``log.*`` settings
  (segment, reason, bytes) and which due segments a consumer group holds back; it changes nothing and may run
  while the pipeline runs. Without ``--dry-run`` it runs the pass, which takes the log's writer lock: it fails
  while ``pinpipe api`` runs (the API runs retention by itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from pinpipe.cli.typer_app import PinpipeTyper
from pinpipe.errors import ConfigError, CorruptStateError, NotFoundError

if TYPE_CHECKING:
    from pinpipe.log.retention import Due


def log_directory(url: str) -> Path:
    """The directory of an embedded log given as ``file://DIR`` or a plain path; it must exist."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme != "file":
        raise ConfigError(
            f"--log {url!r} is not an embedded (file://) log",
            hint="Kafka and Kinesis check their own data; `pinpipe log` works on file://DIR logs",
        )
    path = Path(rest if sep else url).expanduser().resolve()
    if not (path / "topics.json").is_file():
        raise NotFoundError(
            f"{path} is not an event log (no topics.json there)", hint="check --log", location=str(path)
        )
    return path


def register(app: typer.Typer) -> None:
    group = PinpipeTyper(help="Check the embedded event log for corrupt records, and skip one.", no_args_is_help=True)
    app.add_typer(group, name="log")

    @group.command("verify")
    def verify_command(
        log_url: Annotated[str | None, typer.Option("--log", help="Event log: file://DIR or a path.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    ) -> None:
        """Check every record of every partition; exit 65 if any is corrupt (each is listed with its repair)."""
        from pinpipe.cli import console
        from pinpipe.config import load_settings
        from pinpipe.log.scan import verify

        url = log_url or load_settings().log.url
        directory = log_directory(url)
        checks = verify(directory)
        corrupt = [(c.topic, c.partition, o, r) for c in checks for o, r in c.corrupt]
        if as_json:
            doc = [
                {
                    "topic": c.topic,
                    "partition": c.partition,
                    "records": c.records,
                    "skipped": c.skipped,
                    "corrupt": [{"offset": o, "reason": r} for o, r in c.corrupt],
                    "lost": None if c.lost_tail is None else {"from": c.lost_tail[0], "to": c.lost_tail[1]},
                }
                for c in checks
            ]
            typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        else:
            total = sum(c.records for c in checks)
            skipped = sum(c.skipped for c in checks)
            console.print(
                f"checked {total:,} records in {len(checks)} partitions of {directory}; {skipped} skipped earlier",
                highlight=False,
            )
            for topic, partition, offset, reason in corrupt:
                console.print(
                    f"corrupt: topic {topic} partition {partition} offset {offset}: {reason} — repair: "
                    f"pinpipe log repair --log {url} --topic {topic} --partition {partition} --offset {offset}",
                    highlight=False,
                    soft_wrap=True,
                )
            for c, (first, end, holder) in ((c, c.lost_tail) for c in checks if c.lost_tail):
                console.print(
                    f"lost: topic {c.topic} partition {c.partition} offsets {first} to {end - 1} (the data ends at "
                    f"{first}; group {holder} committed {end}) — repair: pinpipe log repair --log {url} --topic "
                    f"{c.topic} --partition {c.partition} --offset {first} --count {end - first}",
                    highlight=False,
                    soft_wrap=True,
                )
        bad = corrupt + [
            (c.topic, c.partition, o, "lost") for c in checks if c.lost_tail for o in range(*c.lost_tail[:2])
        ]
        if bad:
            raise CorruptStateError(
                f"the event log {directory} holds {len(bad)} corrupt or lost records",
                hint="skip each with the `pinpipe log repair` command printed above (its content is lost)",
                topic=bad[0][0],
                partition=bad[0][1],
                offset=bad[0][2],
            )
        if not as_json:
            console.print("event log: [green]intact[/]")

    @group.command("repair")
    def repair_command(
        topic: Annotated[str, typer.Option("--topic", help="Topic of the corrupt record.")],
        partition: Annotated[int, typer.Option("--partition", help="Its partition.")],
        offset: Annotated[int, typer.Option("--offset", help="Its offset (as `pinpipe log verify` prints it).")],
        count: Annotated[int, typer.Option("--count", help="Skip this many consecutive records from --offset.")] = 1,
        log_url: Annotated[str | None, typer.Option("--log", help="Event log: file://DIR or a path.")] = None,
    ) -> None:
        """Skip corrupt records (only ones `verify` reports) and record them in DIR/skipped.json for accounting."""
        from pinpipe.cli import console
        from pinpipe.log.integrity import SKIPPED_FILE
        from pinpipe.log.scan import repair

        if count < 1:
            raise ConfigError(f"--count {count} is not a positive number of records")
        from pinpipe.config import load_settings

        directory = log_directory(log_url or load_settings().log.url)
        skipped = repair(directory, topic, partition, offset, count)
        where = f"topic {topic} partition {partition}"
        shown = f"offset {skipped[0]}" if len(skipped) == 1 else f"offsets {skipped[0]} to {skipped[-1]}"
        console.print(
            f"skipped {shown} of {where}; recorded in {directory / SKIPPED_FILE} (readers step over it, "
            "accounting reports it)",
            highlight=False,
            soft_wrap=True,
        )

    @group.command("retention")
    def retention_command(
        log_url: Annotated[str | None, typer.Option("--log", help="Event log: file://DIR or a path.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the pass as JSON.")] = False,
    ) -> None:
        """Show (--dry-run) or run a retention pass: closed segments past log.retention_ms / retention_bytes that
        every consumer group has committed are deleted, after their counts are recorded in retired.json."""
        from pinpipe.cli import console
        from pinpipe.config import load_settings
        from pinpipe.log import retention
        from pinpipe.log.embedded import EmbeddedLog
        from pinpipe.log.topics import TopicsFile

        settings = load_settings({"log": {"url": log_url}})
        directory = log_directory(settings.log.url)
        policy = retention.RetentionPolicy.from_settings(settings.log)
        if dry_run:
            result = retention.plan(directory, TopicsFile(directory).load(), policy, retention.wall_clock_ms())
        else:
            event_log = EmbeddedLog(directory, policy)
            try:
                result = event_log.run_retention()
            finally:
                event_log.close()
        verb = "would delete" if dry_run else "deleted"
        if as_json:
            doc = {
                "dry_run": dry_run,
                "deleted": [_due(d) for d in result.deleted],
                "held": [_due(d) for d in result.held],
                "bytes": [{"topic": t, "partition": p, "bytes": b} for (t, p), b in sorted(result.bytes.items())],
            }
            typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
            return
        for d in result.deleted:
            console.print(
                f"{verb}: topic {d.topic} partition {d.partition} offsets {d.segment.base} to {d.segment.end - 1} "
                f"({d.segment.bytes:,} bytes, {d.reason})",
                highlight=False,
                soft_wrap=True,
            )
        for d in result.held:
            group, position = d.held_by or ("?", 0)
            console.print(
                f"held back: topic {d.topic} partition {d.partition} offsets {d.segment.base} to {d.segment.end - 1} "
                f"is due ({d.reason}) but group {group} committed only {position}",
                highlight=False,
                soft_wrap=True,
            )
        total = sum(d.segment.bytes for d in result.deleted)
        console.print(f"{verb} {len(result.deleted)} segments ({total:,} bytes); {len(result.held)} held back")


def _due(d: Due) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(d)
