"""Fault drill: run the pipeline as separate processes, SIGKILL one component at random moments, then prove that
nothing was lost or doubled.

Who calls what: ``pinpipe drill`` (:mod:`pinpipe.cli.drill_cmd`) and the drill tests call :func:`run_drill`.

What one drill does, all on 127.0.0.1 and under one data directory:

1. loads the bundled sample into a SQLite source database (``source.db``);
2. starts ``pinpipe api`` (embedded log ``log/``) on a free port, ``pinpipe sink`` (log → ``lake/``) and
   ``pinpipe stream`` (log → ``stream-lake/``) as child processes of a :class:`~pinpipe.ops.supervise.Supervisor`
   (the demo's), each waited for until ready (port open, or its "ready" log line);
3. emulates ``events`` selections through *each* dialect at once (Kafka REST and Kinesis proxy, the same seed,
   so each post arrives twice — two topics per kind), with send logs ``send-batch.jsonl`` / ``send-stream.jsonl``
   and retries enough to ride out a restart, paced so that the sending lasts a few seconds;
4. meanwhile SIGKILLs the chosen component ``kills`` times at random moments (seeded, counted from the moment
   both emulators have had a first request answered) and restarts it at once:

   - ``api``: the API process, at random moments while requests are in flight;
   - ``log``: the embedded log has no process of its own — it lives inside the API process, so killing the log
     means killing that process *mid-append*: the drill watches the log's end offsets and SIGKILLs the API the
     instant a group commit has been published, i.e. after records became durable and before (or while) their
     acknowledgements go out — the window where a client retry appends a record twice;
   - ``sink`` / ``stream``: the worker process, wherever it is (reading, writing an object, committing to Delta);
   - ``corrupt``: nothing is killed — one byte of a fresh record in the middle of the log is flipped instead, and
     the sink and the stream job must stop naming it; ``pinpipe log verify``/``repair`` skip it and both are
     restarted (:mod:`pinpipe.ops.corrupt_drill`);

5. waits until the sink has landed and the stream job has committed everything in the log (quiescence), stops
   the three processes cleanly, runs the batch job (DuckDB) on ``lake/``;
6. runs :func:`pinpipe.checks.accounting.account` on ``lake/`` (send logs → log → landed → batch → silver) and on
   ``stream-lake/`` (log → stream → silver), and batch/stream parity (:mod:`pinpipe.checks.parity`) between the lakes.

The drill passes when both accountings balance and the lakes' silver and quarantine tables are identical (and,
for ``corrupt``, when the corruption was met, named, verified, repaired and reported by accounting as skipped).
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pinpipe.batch.job import run_batch
from pinpipe.checks.accounting import AccountingReport, account
from pinpipe.checks.parity import ParityReport, compare_lakes
from pinpipe.config import DEFAULT_PREFIX
from pinpipe.emulate.emulator import Dialect, EmulateOptions, EmulateSummary, emulate
from pinpipe.engine import open_engine
from pinpipe.errors import ConfigError, RetryableError
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.ops.corrupt_drill import Corruption, corrupt_and_repair
from pinpipe.ops.supervise import Child, Supervisor, free_port
from pinpipe.source.database import create_source_engine
from pinpipe.source.load import init_source, origin_from
from pinpipe.tables import kind_of_topic, stream_app_id

Component = Literal["api", "sink", "stream", "log", "corrupt"]
KILLABLE: tuple[Component, ...] = ("api", "sink", "stream", "log")
DIALECTS: tuple[Dialect, ...] = ("batch", "stream")
COMPONENTS: tuple[Component, ...] = (*KILLABLE, "corrupt")
RECORDS_PER_REQUEST = 4
QUIESCE_TIMEOUT_S = 90.0
SINK_GROUP = "pinpipe-drill-sink"


@dataclass(frozen=True)
class DrillOptions:
    component: Component
    data_dir: Path
    kills: int = 3
    events: int = 1000
    """Selections sent through each dialect (each is a pin, a geo and a user record)."""
    seed: int = 7
    send_seconds: float = 6.0
    """How long the sending should last (the kills fall inside it)."""
    prefix: str = DEFAULT_PREFIX


@dataclass
class Kill:
    number: int
    at_s: float
    pid: int
    new_pid: int
    restart_s: float
    note: str = ""


@dataclass
class DrillResult:
    options: DrillOptions
    kills: list[Kill] = field(default_factory=list)
    sends: dict[str, EmulateSummary] = field(default_factory=dict)
    quiesced_s: float | None = None
    batch_accounting: AccountingReport | None = None
    stream_accounting: AccountingReport | None = None
    parity: ParityReport | None = None
    corruption: Corruption | None = None
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        reports = [self.batch_accounting]
        if self.stream_accounting is not None or self.options.component == "stream":
            reports.append(self.stream_accounting)
        parity_ok = self.parity is not None and self.parity.identical  # missing parity is no pass
        if self.options.component == "corrupt":
            c = self.corruption
            if c is None or not c.handled or self.batch_accounting is None:
                return False
            skipped = [f for f in self.batch_accounting.findings if f.problem == "skipped" and f.subject == c.topic]
            if sum(f.records for f in skipped) != 1:
                return False
        return all(r is not None and not r.failures() for r in reports) and parity_ok


Progress = Callable[[str], None]
READY_TIMEOUT_S = 60.0


@dataclass
class _Service:
    """A ``pinpipe`` command run under the supervisor, restartable, with a readiness test."""

    name: str
    args: list[str]
    port: int | None = None
    ready_text: str | None = None
    child: Child | None = None

    @property
    def pid(self) -> int:
        return self.child.proc.pid if self.child is not None else 0

    def start(self, sup: Supervisor) -> float:
        """Start and wait until ready; the seconds that took."""
        return self.launch(sup)()

    def launch(self, sup: Supervisor) -> Callable[[], float]:
        """Start; the returned call waits until ready and returns the seconds since the start."""
        log_path = sup.log_dir / f"{self.name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        started = time.monotonic()
        child = self.child = sup.start(self.name, [sys.executable, "-m", "pinpipe", *self.args])

        def wait() -> float:
            while not self._ready(log_path, offset):
                child.check()
                if time.monotonic() - started > READY_TIMEOUT_S:
                    raise RetryableError(f"{self.name} was not ready after {READY_TIMEOUT_S:.0f} s: {child.tail()}")
                time.sleep(0.02)
            return time.monotonic() - started

        return wait

    def _ready(self, log_path: Path, offset: int) -> bool:
        if self.port is not None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
        if self.ready_text is not None:
            with log_path.open("rb") as fh:
                fh.seek(offset)
                return self.ready_text.encode() in fh.read()
        return True

    def kill(self) -> None:
        """SIGKILL (no cleanup of any kind) and reap."""
        if self.child is not None and self.child.running:
            self.child.proc.kill()
            self.child.proc.wait()


def _check(opts: DrillOptions) -> None:
    if opts.component not in COMPONENTS:
        raise ConfigError(f"unknown component {opts.component!r}", hint="use one of: " + ", ".join(COMPONENTS))
    if opts.kills < 0 or opts.events < 1:
        raise ConfigError("--kills must be >= 0 and --events >= 1")
    if opts.data_dir.exists() and any(opts.data_dir.iterdir()):
        raise ConfigError(f"{opts.data_dir} is not empty", hint="give --data-dir a new or empty directory")


def run_drill(opts: DrillOptions, progress: Progress | None = None) -> DrillResult:
    """Run one drill (see the module docstring); the result says what was killed when and whether it balanced."""
    _check(opts)
    say = progress or (lambda message: None)
    started = time.monotonic()
    root = opts.data_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    result = DrillResult(opts)
    db_url = f"sqlite:///{root / 'source.db'}"
    _load_source(db_url)
    log_url, lake_url, stream_url = (f"file://{root / name}" for name in ("log", "lake", "stream-lake"))
    port = free_port()
    sink_args = ["--group", SINK_GROUP, "--flush-records", "200", "--flush-seconds", "0.3"]
    services = {
        "api": _Service("api", ["api", "--port", str(port), "--log", log_url], port=port),
        "sink": _Service(
            "sink", ["sink", "--log", log_url, "--lake", lake_url, *sink_args], ready_text="partition ready"
        ),
    }
    stream_args = ["--log", log_url, "--lake", stream_url, "--max-wait-ms", "150", "--prefix", opts.prefix]
    services["stream"] = _Service("stream", ["stream", *stream_args], ready_text="partitions assigned")
    event_log = EmbeddedLog(root / "log")
    try:
        with Supervisor(root / "logs", timeout=30) as sup:
            say(f"starting {', '.join(services)} (api on port {port}) in {root}")
            services["api"].start(sup)
            for wait in [service.launch(sup) for name, service in services.items() if name != "api"]:
                wait()
            result.sends = _send_with_kills(opts, root, db_url, port, services, sup, event_log, result, say)
            if result.corruption is not None:
                for line in result.corruption.notes:
                    say(line)
            say("waiting for the sink and the stream job to catch up")
            stream_lake = Lake(stream_url)
            result.quiesced_s = _quiesce(event_log, stream_lake, opts.prefix, list(services.values()), say)
            codes = sup.stop_all()
            if any(code not in (0, None) for code in codes.values()):
                say(f"exit codes after a clean stop: {codes}")
        say(f"all stopped at {time.monotonic() - started:.1f} s; running the batch job")
        _batch(Lake(lake_url), opts.prefix)
        say(f"accounting at {time.monotonic() - started:.1f} s")
        sends = sorted(root.glob("send-*.jsonl"))
        result.batch_accounting = account(
            Lake(lake_url), opts.prefix, event_log=event_log, send_logs=sends, sink_group=SINK_GROUP
        )
        result.stream_accounting = account(
            Lake(stream_url), opts.prefix, event_log=event_log, send_logs=sends, sink_group=SINK_GROUP
        )
        result.parity = _parity(Lake(stream_url), Lake(lake_url))
    finally:
        event_log.close()
        result.elapsed_s = time.monotonic() - started
    return result


def _load_source(db_url: str) -> None:

    engine = create_source_engine(db_url)
    try:
        init_source(engine, origin_from("sample"))
    finally:
        engine.dispose()


def _send_with_kills(
    opts: DrillOptions,
    root: Path,
    db_url: str,
    port: int,
    services: dict[str, _Service],
    sup: Supervisor,
    event_log: EmbeddedLog,
    result: DrillResult,
    say: Progress,
) -> dict[str, EmulateSummary]:
    requests = -(-opts.events // RECORDS_PER_REQUEST) * 3
    sends: dict[str, EmulateSummary] = {}
    failures: dict[Dialect, BaseException] = {}
    sending = {dialect: threading.Event() for dialect in DIALECTS}

    def send(dialect: Dialect) -> None:
        options = EmulateOptions(
            dialect=dialect,
            api=f"http://127.0.0.1:{port}",
            db_url=db_url,
            count=opts.events,
            rate=requests / opts.send_seconds,
            seed=opts.seed,
            concurrency=4,
            records_per_request=RECORDS_PER_REQUEST,
            send_log=root / f"send-{dialect}.jsonl",
            prefix=opts.prefix,
            max_attempts=14,
        )
        try:
            sends[dialect] = emulate(options, progress=lambda records: sending[dialect].set())
        except BaseException as exc:  # raised again in the drill's thread, after the other emulator is done
            failures[dialect] = exc
        finally:
            sending[dialect].set()

    threads = [threading.Thread(target=send, args=(d,), name=f"emulate-{d}") for d in DIALECTS]
    rng = random.Random(opts.seed)
    kills = 0 if opts.component == "corrupt" else opts.kills
    moments = sorted(rng.uniform(0.1, 0.8) * opts.send_seconds for _ in range(kills))
    target = services["api" if opts.component in ("log", "corrupt") else opts.component]
    what = "one corrupted record" if opts.component == "corrupt" else f"{kills} kills of {opts.component}"
    say(f"sending {opts.events} selections through each dialect; {what}")
    for thread in threads:
        thread.start()
    t0 = _sending_since(sending, say)
    if opts.component == "corrupt":
        time.sleep(max(0.0, t0 + 0.3 * opts.send_seconds - time.monotonic()))
        readers = {name: services[name] for name in ("sink", "stream")}
        result.corruption = corrupt_and_repair(
            event_log, root / "log", opts.prefix, readers, lambda name: services[name].start(sup), say
        )
    for number, moment in enumerate(moments, start=1):
        time.sleep(max(0.0, t0 + moment - time.monotonic()))
        note = _wait_mid_append(event_log, opts.prefix) if opts.component == "log" else ""
        pid = target.pid
        at = time.monotonic() - t0
        target.kill()
        restart_s = target.start(sup)
        result.kills.append(Kill(number, at, pid, target.pid, restart_s, note))
        say(f"kill {number}: {target.name} pid {pid} at {at:.2f} s; back in {restart_s:.2f} s {note}".rstrip())
    for thread in threads:
        thread.join()
    for dialect, exc in failures.items():
        say(f"the {dialect} emulator failed: {exc}")
        raise exc
    return sends


def _sending_since(sending: Mapping[Dialect, threading.Event], say: Progress) -> float:
    """Wait until every emulator has had a request answered (or has stopped) and return that moment: the kill
    moments count from it, so that a slow start (reading the source, the API probe) never puts a kill before
    an emulator sends, where a restart would meet its probe instead of its requests."""
    started = time.monotonic()
    for dialect, event in sending.items():
        if not event.wait(max(0.0, started + READY_TIMEOUT_S - time.monotonic())):
            say(f"the {dialect} emulator has sent nothing after {READY_TIMEOUT_S:.0f} s; the kills start anyway")
    now = time.monotonic()
    say(f"both emulators sending after {now - started:.2f} s; the kill moments count from here")
    return now


def _ends(event_log: EmbeddedLog, prefix: str) -> dict[tuple[str, int], int]:
    return {
        (topic, p): event_log.end_offset(topic, p)
        for topic, n in event_log.topics().items()
        if kind_of_topic(prefix, topic) is not None
        for p in range(n)
    }


def _wait_mid_append(event_log: EmbeddedLog, prefix: str, timeout_s: float = 5.0) -> str:
    """Block until the log publishes new records (an append just became durable); say what was seen."""
    before = _ends(event_log, prefix)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _ends(event_log, prefix)
        if now != before:
            grown = sum(now.values()) - sum(before.values())
            return f"(right after {grown} records were published)"
        time.sleep(0.001)
    return "(no append seen within 5 s)"


def _quiesce(
    event_log: EmbeddedLog, stream_lake: Lake | None, prefix: str, services: list[_Service], say: Progress
) -> float | None:
    """Seconds until the sink's commits and the stream job's silver transactions reach the log's end; None on
    timeout (said, with what is behind; the accounting then reports it). A service that died raises FatalError."""
    started = time.monotonic()
    behind: dict[str, int] = {}
    while time.monotonic() - started < QUIESCE_TIMEOUT_S:
        for service in services:
            if service.child is not None:
                service.child.check()
        ends = _ends(event_log, prefix)
        skipped = event_log.skipped_records()
        for tp, end in ends.items():  # a skipped record at the very end is never read: nothing is owed for it
            while end - 1 in skipped.get(tp, ()):
                end -= 1
            ends[tp] = end
        behind = {
            f"sink {t}:{p}": end - event_log.committed(SINK_GROUP, t).get(p, 0)
            for (t, p), end in ends.items()
            if event_log.committed(SINK_GROUP, t).get(p, 0) < end
        }
        if stream_lake is not None:
            behind.update(_stream_behind(stream_lake, prefix, ends))
        if not behind:
            return time.monotonic() - started
        time.sleep(0.25)
    say(f"not caught up after {QUIESCE_TIMEOUT_S:.0f} s; records behind: {behind}")
    return None


def _stream_behind(stream_lake: Lake, prefix: str, ends: dict[tuple[str, int], int]) -> dict[str, int]:

    out: dict[str, int] = {}
    for (topic, partition), end in ends.items():
        kind = kind_of_topic(prefix, topic)
        done = 0 if kind is None else delta.txn_version(stream_lake, kind, stream_app_id(topic, partition)) or 0
        if kind is not None and done < end:
            out[f"stream {topic}:{partition}"] = end - done
    return out


def _batch(lake: Lake, prefix: str) -> None:

    with open_engine("duckdb") as engine:
        run_batch(lake, engine, prefix)


def _parity(stream_lake: Lake, batch_lake: Lake) -> ParityReport:
    """The parity report between the stream lake and the batch lake."""
    return compare_lakes(stream_lake, batch_lake)
