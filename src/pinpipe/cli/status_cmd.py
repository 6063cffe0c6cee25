"""``pinpipe status``: the running pipeline at a glance (see :mod:`pinpipe.checks.status` for what it reads).

A reading command: it never creates a log, a lake or a table, and exits 2 when the log or a lake is absent.
Prints one table per look (``--json``: one JSON object per look, one per line); ``--watch [SECONDS]`` refreshes
in place (Rich Live) until Ctrl-C or ``--count`` looks. Exits 4 (:data:`~pinpipe.checks.status.STUCK_EXIT_CODE`)
when the last look found a stage stuck, 0 otherwise.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from pinpipe.errors import ConfigError

_HELP = """Per topic and partition: the log's end offset, the sink's committed and landed positions and its lag,
the stream worker's position (silver's pinpipe-stream:<topic>:<p> transaction) and its lag; per silver table its
freshness (now − the newest commit that wrote rows or progress to it, i.e. when the newest record became
readable there); the last batch run and its quality verdict. Exits 4 when a stage is stuck: its lag is above
--max-lag, or above 0 with no progress for --stuck-after seconds (needs --watch to see two looks)."""


def _number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never written"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render(look: Any) -> Group:
    """The Rich renderable of one :class:`~pinpipe.checks.status.Look`."""
    table = Table(title=f"pinpipe status — {look.taken_at:%Y-%m-%d %H:%M:%S} UTC", title_justify="left")
    retention = any(p.log_start or p.retired for p in look.partitions)  # columns only once retention deleted some
    names = ("topic", "p", *(("log start", "retired") if retention else ()), "log end", "sink committed")
    for name in (*names, "sink landed", "sink lag", "stream pos", "stream lag"):
        table.add_column(name, justify="left" if name == "topic" else "right")
    stuck = {(s.stage, s.topic, s.partition) for s in look.stuck}
    for p in look.partitions:

        def lag(stage: str, value: int | None, p: Any = p) -> Text:
            style = "bold red" if (stage, p.topic, p.partition) in stuck else ("yellow" if value else "green")
            return Text(_number(value), style=style if value is not None else "dim")

        table.add_row(
            p.topic,
            str(p.partition),
            *((_number(p.log_start), _number(p.retired)) if retention else ()),
            _number(p.log_end),
            _number(p.sink_committed),
            _number(p.sink_landed),
            lag("sink", p.sink_lag),
            _number(p.stream_position),
            lag("stream", p.stream_lag),
        )
    lines: list[Any] = [table]
    if not look.partitions:
        lines.append(Text(f"the event log {look.log} holds no topic yet", style="dim"))
    for s in look.silver:
        where = "" if s.lake == look.lake else f" ({s.lake})"
        lines.append(Text(f"silver {s.kind:<4}{where}: last written {_age(s.age_s)}"))
    run = look.last_run
    if run is None:
        lines.append(Text(f"last batch run: none recorded in {look.lake}/_meta/runs", style="dim"))
    else:
        style = "green" if run.verdict == "passed" else "bold red"
        lines.append(
            Text(
                f"last batch run {run.run_id} finished {run.finished_at:%Y-%m-%d %H:%M:%S} UTC: read {run.read:,}, "
                f"quarantined {run.quarantined:,}; quality gate {run.verdict}",
                style=style,
            )
        )
    for s in look.stuck:
        lines.append(Text(f"STUCK {s.stage} {s.topic}/{s.partition}: {s.reason}", style="bold red"))
    return Group(*lines)


def register(app: typer.Typer) -> None:
    @app.command("status", help=_HELP)
    def status_command(
        log_url: Annotated[str | None, typer.Option("--log", help="Event log URL or path (default: log.url).")] = None,
        lake_url: Annotated[
            str | None, typer.Option("--lake", help="Lake the sink and batch write, URL or path (default: lake.url).")
        ] = None,
        stream_lake_url: Annotated[
            str | None, typer.Option("--stream-lake", help="Lake the stream worker writes (default: --lake).")
        ] = None,
        prefix: Annotated[str | None, typer.Option("--prefix", help="Topic prefix (prefix setting).")] = None,
        sink_group: Annotated[
            str | None, typer.Option("--sink-group", help="Consumer group of the sink (sink.group).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print each look as one JSON object per line.")] = False,
        watch: Annotated[
            float | None,
            typer.Option("--watch", help="Refresh every SECONDS (in place; with --json a line per look)."),
        ] = None,
        count: Annotated[
            int | None,
            typer.Option("--count", min=1, help="Stop after this many looks (default: 1, or ∞ with --watch)."),
        ] = None,
        max_lag: Annotated[
            int | None, typer.Option("--max-lag", min=0, help="A stage whose lag is above this is stuck.")
        ] = None,
        stuck_after: Annotated[
            float,
            typer.Option("--stuck-after", min=0.0, help="Lag > 0 without progress for this many seconds is stuck."),
        ] = 30.0,
        max_share: Annotated[
            float,
            typer.Option("--max-quarantine-share", min=0.0, max=1.0, help="Threshold of the quality verdict shown."),
        ] = 0.05,
    ) -> None:
        from rich.live import Live

        from pinpipe.checks.status import STUCK_EXIT_CODE, Progress, open_existing_lake, open_existing_log, take_look
        from pinpipe.cli import console, err_console

        if watch is not None and watch <= 0:
            raise ConfigError(f"--watch {watch} is not a positive number of seconds", hint="e.g. --watch 2")
        from pinpipe.config import load_settings

        settings = load_settings(
            {"prefix": prefix, "log": {"url": log_url}, "lake": {"url": lake_url}, "sink": {"group": sink_group}}
        )
        looks = count if count is not None else (None if watch is not None else 1)
        interval = watch if watch is not None else 2.0
        progress = Progress(max_lag=max_lag, stuck_after_s=stuck_after)
        lake = open_existing_lake(settings.lake.url, settings.lake)
        stream_lake = open_existing_lake(stream_lake_url, settings.lake) if stream_lake_url else lake
        last: Any = None
        line_counts: dict[str, int] = {}
        with open_existing_log(settings.log.url) as event_log:

            def look() -> Any:
                seen = take_look(
                    event_log,
                    lake,
                    prefix=settings.prefix,
                    sink_group=settings.sink.group,
                    stream_lake=stream_lake,
                    max_quarantine_share=max_share,
                    line_counts=line_counts,
                )
                return progress.judge(seen)

            taken = 0
            try:
                if as_json or watch is None:
                    while looks is None or taken < looks:
                        if taken:
                            time.sleep(interval)
                        last = look()
                        taken += 1
                        if as_json:
                            typer.echo(orjson.dumps(last.as_dict()).decode())
                        else:
                            console.print(render(last))
                else:
                    last = look()
                    taken = 1
                    with Live(render(last), console=console, auto_refresh=False) as live:
                        while looks is None or taken < looks:
                            time.sleep(interval)
                            last = look()
                            taken += 1
                            live.update(render(last), refresh=True)
            except KeyboardInterrupt:
                pass
        if last is not None and last.stuck:
            stages = ", ".join(f"{s.stage} {s.topic}/{s.partition}" for s in last.stuck)
            err_console.print(f"[bold red]stuck:[/] {stages}", highlight=False)
            raise typer.Exit(STUCK_EXIT_CODE)
