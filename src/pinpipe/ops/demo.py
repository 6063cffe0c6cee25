"""``pinpipe demo``: the whole pipeline on one machine, end to end, resumable.

Who calls what: ``pinpipe demo`` (:mod:`pinpipe.cli.demo_cmd`, run by ``make demo``) calls :func:`run_demo` with a
:class:`DemoUI` that draws progress and prints the results. Everything lives under one data directory
(:class:`DemoLayout`): the SQLite source database, the embedded event log, the ``file://`` lake, the send log,
the services' logs and the report. The steps:

1. initialise the source database with the bundled real sample (a no-op when it is already loaded);
2. start ``pinpipe api`` (free loopback port), ``pinpipe sink`` and ``pinpipe stream`` as separate processes
   (:class:`~pinpipe.ops.supervise.Supervisor`);
3. emulate ``events`` posts (one pin, geo and user record each) at full speed, half through the batch dialect
   (Kafka REST → ``<prefix>.<kind>`` topics), half through the stream dialect (Kinesis proxy →
   ``streaming-<prefix>-<kind>``), in chunks (:func:`plan_chunks`);
4. wait until the sink has committed every partition to the log's end, and the stream worker has caught up;
5. run the batch job (silver, quarantine, gold), the quality gate, the end-to-end accounting
   (:func:`pinpipe.checks.accounting.account`) and the HTML report, and hand everything to the UI.

Interrupting and re-running: each chunk is an emulator run with its own seed (``seed + 2·index``, +1 for the
stream dialect; chunk 0 of the batch dialect is the original emulator's sequence for ``seed``), recorded in
``demo-state.json`` only once every request of it was acknowledged. A re-run sends exactly the chunks not
recorded; a chunk that was cut short is sent again whole — records it had already delivered reach the log twice,
which the pipeline is built for: silver holds one row per ``ind`` (the re-sent copies count as collapsed
duplicates), the sink lands each log record once, the batch job skips what it has processed. So the final
silver and gold tables are the same however often the demo was interrupted, and every run's accounting holds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import orjson
import pyarrow as pa

from pinpipe.batch.gold import read_gold_tables
from pinpipe.batch.job import BatchResult, run_batch
from pinpipe.checks.accounting import AccountingReport, account
from pinpipe.checks.quality import QualityVerdict, check_run, enforce
from pinpipe.config import DEFAULT_PREFIX, load_settings
from pinpipe.emulate.emulator import EmulateOptions, emulate
from pinpipe.engine import open_engine
from pinpipe.errors import ConfigError, FatalError, LogUnavailableError
from pinpipe.lake import delta
from pinpipe.lake.store import open_lake
from pinpipe.log import locate_log, open_log
from pinpipe.ops.supervise import Child, Supervisor, free_port
from pinpipe.report.html import ReportSummary, write_report
from pinpipe.source.database import create_source_engine
from pinpipe.source.load import SampleOrigin, init_source
from pinpipe.tables import KINDS, kind_of_topic, stream_app_id

Dialect = Literal["batch", "stream"]
STATE_FILE = "demo-state.json"


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("pinpipe-data")
    events: int = 3000
    seed: int = 100
    keep_running: bool = False
    records_per_request: int = 50
    """Records per HTTP request (1 = the original emulator's one record per request)."""
    chunk: int = 250
    """Posts per resumable emulator run."""
    max_quarantine_share: float = 0.05
    stop_timeout: float = 10.0
    wait_timeout: float = 120.0
    prefix: str = DEFAULT_PREFIX
    sink_group: str = "pinpipe-sink"


@dataclass(frozen=True)
class DemoLayout:
    """Where everything of one demo lives (all under ``root``)."""

    root: Path

    @property
    def source_url(self) -> str:
        return f"sqlite:///{self.root / 'source.db'}"

    @property
    def log_url(self) -> str:
        return f"file://{self.root / 'log'}"

    @property
    def lake_url(self) -> str:
        return f"file://{self.root / 'lake'}"

    @property
    def send_log(self) -> Path:
        return self.root / "send-log.jsonl"

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def report(self) -> Path:
        return self.root / "report.html"


@dataclass(frozen=True)
class Chunk:
    """One resumable emulator run: ``count`` posts through ``dialect``, selected with ``seed``."""

    dialect: Dialect
    index: int
    seed: int
    count: int

    @property
    def key(self) -> str:
        return f"{self.dialect}:seed={self.seed}:count={self.count}"


def plan_chunks(events: int, seed: int, chunk: int) -> list[Chunk]:
    """``events`` posts split in half between the dialects (batch takes the odd one), in chunks of ``chunk``,
    batch and stream chunks alternating."""
    if events < 0 or chunk < 1:
        raise ConfigError("--events must be >= 0", hint="e.g. --events 3000")
    per: dict[Dialect, int] = {"batch": (events + 1) // 2, "stream": events // 2}
    lists: dict[Dialect, list[Chunk]] = {"batch": [], "stream": []}
    for dialect, total in per.items():
        for index, start in enumerate(range(0, total, chunk)):
            lists[dialect].append(
                Chunk(dialect, index, seed + 2 * index + (dialect == "stream"), min(chunk, total - start))
            )
    out: list[Chunk] = []
    for i in range(max(len(lists["batch"]), len(lists["stream"]))):
        out.extend(c for c in (lists["batch"][i : i + 1] + lists["stream"][i : i + 1]))
    return out


def load_done(path: Path) -> set[str]:
    """The chunk keys a previous demo run completed."""
    if not path.is_file():
        return set()
    try:
        return set(orjson.loads(path.read_bytes()).get("done", []))
    except (orjson.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"{path} is not a demo state file", hint=f"delete {path} to resend every event") from exc


def save_done(path: Path, done: set[str]) -> None:
    """Record completed chunks atomically (temporary file, fsync, rename)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(orjson.dumps({"done": sorted(done)}, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class DemoUI(Protocol):
    """What the demo shows; the CLI draws it with Rich, tests may record it."""

    def progress(self, step: str, done: int, total: int | None) -> None: ...

    def note(self, text: str) -> None: ...

    def results(self, result: DemoResult) -> None: ...

    def serving(self, urls: dict[str, str]) -> None: ...


@dataclass
class DemoResult:
    layout: DemoLayout
    chunks_sent: int
    chunks_skipped: int
    records_acked: int
    batch: BatchResult
    verdict: QualityVerdict
    accounting: AccountingReport
    gold: dict[str, pa.Table]
    report: ReportSummary
    seconds: float
    urls: dict[str, str] = field(default_factory=dict)


def _pinpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinpipe", *args]


def _wait(what: str, done: Callable[[], bool], children: list[Child], timeout: float) -> None:
    """Poll ``done`` until it is true; raise if a child dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        for child in children:
            child.check()
        if time.monotonic() > deadline:
            raise LogUnavailableError(
                f"{what} did not happen within {timeout:.0f} s", hint="see the logs in the data dir"
            )
        time.sleep(0.2)


def _start_services(sup: Supervisor, layout: DemoLayout, opts: DemoOptions) -> tuple[str, dict[str, str], list[Child]]:

    locate_log(layout.log_url, "write")  # the demo owns its data dir: the sink and stream read a log that exists
    api_port, sink_metrics, stream_metrics = free_port(), free_port(), free_port()
    stores = ("--log", layout.log_url, "--lake", layout.lake_url)
    children = [
        sup.start("api", _pinpipe("api", "--host", "127.0.0.1", "--port", str(api_port), "--log", layout.log_url)),
        sup.start("sink", _pinpipe("sink", *stores, "--flush-seconds", "0.5", "--metrics-port", str(sink_metrics))),
        sup.start("stream", _pinpipe("stream", *stores, "--metrics-port", str(stream_metrics))),
    ]
    base = f"http://127.0.0.1:{api_port}"
    urls = {
        "API (Kafka REST v2 + Kinesis proxy)": base,
        "API docs": f"{base}/docs",
        "API metrics": f"{base}/metrics",
        "sink metrics": f"http://127.0.0.1:{sink_metrics}/metrics",
        "stream metrics": f"http://127.0.0.1:{stream_metrics}/metrics",
    }

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200
        return False

    _wait("the API answering /healthz", healthy, children, opts.wait_timeout)
    return base, urls, children


def _emulate(
    layout: DemoLayout, opts: DemoOptions, api: str, ui: DemoUI, children: list[Child]
) -> tuple[int, int, int]:

    chunks = plan_chunks(opts.events, opts.seed, opts.chunk)
    done = load_done(layout.state)
    todo = [c for c in chunks if c.key not in done]
    total = sum(c.count for c in chunks)
    sent = total - sum(c.count for c in todo)
    if sent == total and total:
        ui.note(f"all {total:,} posts were sent by an earlier run; nothing to send")
    elif sent:
        ui.note(f"{sent:,} of {total:,} posts were sent by an earlier run; sending the other {total - sent:,}")
    ui.progress("emulate", sent, total)
    acked = 0
    for chunk in todo:
        for child in children:
            child.check()
        records = [0]

        def advance(n: int, base: int = sent, records: list[int] = records) -> None:
            records[0] += n
            ui.progress("emulate", min(total, base + records[0] // len(KINDS)), total)

        summary = emulate(
            EmulateOptions(
                dialect=chunk.dialect,
                api=api,
                db_url=layout.source_url,
                count=chunk.count,
                seed=chunk.seed,
                concurrency=4,
                records_per_request=opts.records_per_request,
                send_log=layout.send_log,
                prefix=opts.prefix,
            ),
            progress=advance,
        )
        acked += summary.records_acked
        unresolved = chunk.count * len(KINDS) - summary.records_acked - summary.records_rejected
        if unresolved:
            raise LogUnavailableError(
                f"{unresolved} records of the {chunk.dialect} chunk {chunk.index} were not acknowledged",
                hint="run the demo again: it resends this chunk (the pipeline collapses the copies)",
            )
        if summary.records_rejected:
            ui.note(f"the API rejected {summary.records_rejected} records of the {chunk.dialect} chunk {chunk.index}")
        done.add(chunk.key)
        save_done(layout.state, done)
        sent += chunk.count
        ui.progress("emulate", sent, total)
    return len(todo), len(chunks) - len(todo), acked


def _log_ends(log: Any, prefix: str) -> dict[tuple[str, int], int]:
    return {
        (topic, p): log.end_offset(topic, p)
        for topic, parts in log.topics().items()
        if kind_of_topic(prefix, topic) is not None
        for p in range(parts)
    }


def _wait_for_workers(layout: DemoLayout, opts: DemoOptions, ui: DemoUI, children: list[Child]) -> None:
    """Wait for the sink to commit every partition to the log's end, then (best effort) for the stream worker."""

    lake = open_lake(layout.lake_url)
    with open_log(layout.log_url) as log:
        ends = _log_ends(log, opts.prefix)
        total = sum(ends.values())

        def landed() -> bool:
            got = 0
            for topic in {t for t, _ in ends}:
                committed = log.committed(opts.sink_group, topic)
                got += sum(min(committed.get(p, 0), end) for (t, p), end in ends.items() if t == topic)
            ui.progress("land", got, total)
            return got >= total

        _wait("the sink landing every record", landed, children, opts.wait_timeout)

        def streamed() -> bool:
            got = 0
            for (topic, p), end in ends.items():
                kind = kind_of_topic(opts.prefix, topic)
                version = delta.txn_version(lake, kind, stream_app_id(topic, p)) if kind else None
                got += min(version or 0, end)
            ui.progress("stream", got, total)
            return got >= total

        try:
            _wait("the stream worker catching up", streamed, children, min(opts.wait_timeout, 60.0))
        except LogUnavailableError:
            ui.note("the stream worker is still behind; the batch job fills silver all the same")


def run_demo(opts: DemoOptions, ui: DemoUI) -> DemoResult:
    """Run the demo (see the module docstring). Raises on a failed stage after the UI has shown the results."""

    started = time.monotonic()
    layout = DemoLayout(opts.data_dir.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    ui.progress("source", 0, 1)
    engine = create_source_engine(layout.source_url)
    try:
        init_source(engine, SampleOrigin())
    finally:
        engine.dispose()
    ui.progress("source", 1, 1)

    with Supervisor(layout.logs, timeout=opts.stop_timeout) as sup:
        ui.progress("services", 0, 3)
        api, urls, children = _start_services(sup, layout, opts)
        ui.progress("services", 3, 3)
        sent, skipped, acked = _emulate(layout, opts, api, ui, children)
        _wait_for_workers(layout, opts, ui, children)

        lake = open_lake(layout.lake_url)
        ui.progress("batch", 0, None)

        def batch_progress(step: str, done: int, total: int) -> None:
            ui.progress("batch", done, total)

        with open_engine("duckdb", sql_cache=load_settings().batch.sql_cache) as df_engine:
            batch = run_batch(lake, df_engine, opts.prefix, progress=batch_progress)
        # a re-run over a finished data dir has nothing new to batch; the accounting below still reconciles it all
        verdict = check_run(lake, opts.max_quarantine_share, run_id=batch.run_id, allow_empty=True)
        with open_log(layout.log_url) as log:
            accounting = account(
                lake, opts.prefix, event_log=log, send_logs=[layout.send_log], sink_group=opts.sink_group
            )
        gold = read_gold_tables(lake)
        report = write_report(lake, layout.report)
        result = DemoResult(
            layout, sent, skipped, acked, batch, verdict, accounting, gold, report, time.monotonic() - started, urls
        )
        ui.results(result)
        if opts.keep_running:
            ui.serving(urls)
            while True:
                for child in children:
                    child.check()
                time.sleep(0.5)
    enforce(verdict)
    accounting.check()
    if not result.report.path.is_file():
        raise FatalError(f"the report {result.report.path} was not written")
    return result
