"""End-to-end accounting on a real (in-process) pipeline run, and on copies of it corrupted on purpose.

One run per module: the bundled sample in SQLite → the API (uvicorn on loopback, embedded log) ← the emulator in
both dialects with send logs → the sink → the batch job. Each test copies the run's directory, breaks one thing
(a landed line deleted, a landed object duplicated, a log record removed, a silver row deleted) and expects the
accounting to fail naming the stage that lost or doubled records.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pinpipe.batch.job import run_batch
from pinpipe.checks.accounting import AccountingReport, account
from pinpipe.cli import main
from pinpipe.emulate.emulator import EmulateOptions, emulate
from pinpipe.engine import open_engine
from pinpipe.errors import AccountingError
from pinpipe.lake.sink import LakeSink
from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.source.database import create_source_engine
from pinpipe.source.load import SampleOrigin, init_source
from tests.integration.test_ingest_emulate import serve

PREFIX = "0affea73130b"
PIN = f"{PREFIX}.pin"
SELECTIONS = 150


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("accounting")
    db_url = f"sqlite:///{root / 'source.db'}"
    engine = create_source_engine(db_url)
    init_source(engine, SampleOrigin())
    engine.dispose()
    event_log = EmbeddedLog(root / "log")
    with serve(event_log) as api:
        for dialect in ("batch", "stream"):
            opts = EmulateOptions(
                dialect=dialect,
                api=api,
                db_url=db_url,
                count=SELECTIONS,
                records_per_request=3,
                send_log=root / f"send-{dialect}.jsonl",
            )
            assert emulate(opts).records_acked == 3 * SELECTIONS
    lake = Lake(f"file://{root / 'lake'}")
    LakeSink(event_log, lake, group="pinpipe-sink", flush_records=50, flush_seconds=0.2).run(until_idle=True)
    event_log.close()
    with open_engine("duckdb") as df:
        run_batch(lake, df, PREFIX)
    return root


def _copy(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(pristine, root)
    return root


def _account(root: Path) -> AccountingReport:
    with EmbeddedLog(root / "log") as event_log:
        return account(
            Lake(f"file://{root / 'lake'}"), PREFIX, event_log=event_log, send_logs=sorted(root.glob("send-*.jsonl"))
        )


def _objects(root: Path, topic: str) -> list[Path]:
    return sorted((root / "lake" / "topics" / topic / "partition=0").glob("*.json"))


def test_a_clean_run_balances_at_every_stage(pristine: Path, tmp_path: Path) -> None:
    report = _account(_copy(pristine, tmp_path))
    assert report.failures() == []
    pin = next(t for t in report.topics if t.topic == PIN)
    assert (pin.sent, pin.acked, pin.in_log, pin.landed, pin.not_landed, pin.batch_done) == (150, 150, 150, 150, 0, 150)
    kinds = {k.kind: k for k in report.kinds}
    assert kinds["pin"].read == 300
    assert kinds["pin"].silver_rows == kinds["pin"].valid_inds > 0


def test_a_deleted_landed_line_is_a_sink_loss(pristine: Path, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    first = _objects(root, PIN)[0]
    lines = first.read_bytes().splitlines(keepends=True)
    first.write_bytes(b"".join(lines[:10] + lines[11:]))
    failures = _account(root).failures()
    assert failures[0].stage == "sink"
    assert failures[0].problem == "lost"
    assert failures[0].records == 1
    assert failures[0].subject == PIN


def test_a_duplicated_landed_object_is_a_sink_doubling(pristine: Path, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    objects = _objects(root, f"streaming-{PREFIX}-geo")
    last = objects[-1]
    copy = last.with_name(f"streaming-{PREFIX}-geo+0+{SELECTIONS:010d}.json")
    shutil.copy(last, copy)
    failures = _account(root).failures()
    assert (failures[0].stage, failures[0].problem) == ("sink", "doubled")
    assert failures[0].records == len(last.read_bytes().splitlines())


def test_a_removed_log_record_is_a_log_loss(pristine: Path, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    partition = root / "log" / PIN / "0"
    index = (partition / f"{0:020d}.index").read_bytes()
    (last_start,) = struct.unpack("<Q", index[-8:])
    os.truncate(partition / f"{0:020d}.index", len(index) - 8)
    os.truncate(partition / f"{0:020d}.data", last_start)
    report = _account(root)
    failures = report.failures()
    assert (failures[0].stage, failures[0].problem, failures[0].records) == ("log", "lost", 1)
    assert failures[0].message.startswith(f"log lost 1 acknowledged records of {PIN}")
    with pytest.raises(AccountingError, match="log lost 1 acknowledged records") as info:
        report.check()
    assert info.value.facts["stage"] == "log"


def test_a_deleted_silver_row_is_a_batch_loss(pristine: Path, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    table = DeltaTable(str(root / "lake" / "silver" / "user"))
    ind = table.to_pyarrow_table(columns=["ind"]).column("ind")[0].as_py()
    table.delete(f"ind = {ind}")
    failures = _account(root).failures()
    assert [(f.stage, f.subject, f.problem) for f in failures][:1] == [("batch", "user", "lost")]


def test_the_command_exits_3_and_names_the_stage(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(pristine, tmp_path)
    args = ["accounting", "--lake", f"file://{root / 'lake'}", "--log", f"file://{root / 'log'}"]
    args += [arg for path in sorted(root.glob("send-*.jsonl")) for arg in ("--send-log", str(path))]
    main([*args, "--json"])  # balanced: returns normally (exit code 0)
    assert '"balanced": true' in capsys.readouterr().out
    first = _objects(root, PIN)[1]
    first.write_bytes(first.read_bytes() + first.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(SystemExit) as failed:
        main(args)
    assert failed.value.code == 3
    assert "stage 'sink'" in capsys.readouterr().err
