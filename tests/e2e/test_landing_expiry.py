"""Landing expiry as an operator meets it, through real processes: ``pinpipe api``, the emulator with send logs,
``pinpipe sink``, ``pinpipe batch``, ``pinpipe landing expire`` (``--dry-run``, ``--json``, a pass cut short
between its manifest and its deletes), ``pinpipe status`` and ``pinpipe accounting``.

Expiry deletes only what the batch has committed (and never a partition's newest object); accounting over
api → log → sink → batch → silver still balances, counting the expired lines as landed; a batch after expiry
commits nothing it had committed before; the batch itself expires when a landing retention is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from pinpipe.emulate.emulator import EmulateOptions, emulate
from pinpipe.lake.expiry_manifest import EXPIRED_PREFIX
from pinpipe.lake.store import parse_landed_key
from pinpipe.source.database import create_source_engine
from pinpipe.source.load import SampleOrigin, init_source
from tests.fixtures.services import embedded_api

SELECTIONS = 60


def pinpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinpipe", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def _landed(lake: Path) -> dict[tuple[str, int], list[Path]]:
    found: dict[tuple[str, int], list[Path]] = {}
    for path in sorted((lake / "topics").rglob("*.json")):
        parsed = parse_landed_key(path.name)
        assert parsed is not None, path
        found.setdefault(parsed[:2], []).append(path)
    return {tp: sorted(paths, key=lambda p: parse_landed_key(p.name)[2]) for tp, paths in found.items()}  # type: ignore[index]


def _accounting(lake: Path, log_dir: Path, send_logs: list[Path], *flags: str) -> dict[str, object]:
    args = ["accounting", "--lake", str(lake), "--log", str(log_dir), "--json", *flags]
    done = pinpipe(*args, *(a for path in send_logs for a in ("--send-log", str(path))))
    assert done.returncode == 0, done.stdout + done.stderr
    doc: dict[str, object] = orjson.loads(done.stdout)
    assert doc["balanced"] is True, doc["findings"]
    return doc


def _sink(log_dir: Path, lake: Path) -> None:
    args = ("--log", str(log_dir), "--lake", str(lake), "--until-idle", "--flush-seconds", "0.3")
    landed = pinpipe("sink", *args, "--flush-records", "25")
    assert landed.returncode == 0, landed.stderr


def test_expiry_deletes_only_what_the_batch_committed_and_accounting_balances(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = create_source_engine(db_url)
    init_source(engine, SampleOrigin())
    engine.dispose()
    log_dir, lake = tmp_path / "log", tmp_path / "lake"
    send_logs = [tmp_path / "send-1.jsonl", tmp_path / "send-2.jsonl"]
    with embedded_api(log_dir) as (base, _):
        opts = EmulateOptions(
            dialect="batch", api=base, db_url=db_url, count=SELECTIONS, records_per_request=3, send_log=send_logs[0]
        )
        assert emulate(opts).records_acked == 3 * SELECTIONS
        _sink(log_dir, lake)
        first = pinpipe("batch", "--lake", str(lake), "--no-gold")
        assert first.returncode == 0, first.stderr
        # more records land after the run: the batch has not committed them
        more = EmulateOptions(
            dialect="batch",
            api=base,
            db_url=db_url,
            count=SELECTIONS,
            records_per_request=3,
            seed=7,
            send_log=send_logs[1],
        )
        assert emulate(more).records_acked == 3 * SELECTIONS
        _sink(log_dir, lake)
    before = _landed(lake)
    assert all(len(paths) >= 4 for paths in before.values()), before  # 120 records per topic, 25 per object

    unset = pinpipe("landing", "expire", "--lake", str(lake))
    assert unset.returncode == 2 and "no landing retention" in unset.stderr
    bad = pinpipe("landing", "expire", "--lake", str(lake), "--older-than", "7 days")
    assert bad.returncode == 2 and "--older-than" in bad.stderr
    young = pinpipe("landing", "expire", "--lake", str(lake), "--older-than", "7d", "--json")
    assert young.returncode == 0, young.stderr
    assert all(p["objects"] == 0 and p["held"] is None for p in orjson.loads(young.stdout)["partitions"])

    dry = pinpipe("landing", "expire", "--lake", str(lake), "--older-than", "0s", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = {(p["topic"], p["partition"]): p for p in orjson.loads(dry.stdout)["partitions"]}
    assert _landed(lake) == before  # a dry run deletes nothing
    assert not (lake / EXPIRED_PREFIX).exists()
    for p in planned.values():
        assert p["held"] == "uncommitted" and p["objects"] > 0, p
        assert p["end_offset"] <= p["batch_position"] == SELECTIONS

    (topic, partition) = sorted(before)[0]
    victim = before[(topic, partition)][0]
    victim_bytes = victim.read_bytes()
    run = pinpipe("landing", "expire", "--lake", str(lake), "--older-than", "0s", "--json")
    assert run.returncode == 0, run.stderr
    done = {(p["topic"], p["partition"]): p for p in orjson.loads(run.stdout)["partitions"]}
    after = _landed(lake)
    for tp, p in done.items():
        assert p["objects"] == planned[tp]["objects"] and p["end_offset"] <= SELECTIONS
        assert after[tp] == before[tp][p["objects"] :]  # a prefix went; what the batch has not committed stayed
        first_kept = parse_landed_key(after[tp][0].name)
        assert first_kept is not None and first_kept[2] == p["end_offset"]
        assert p["records"] == p["end_offset"]  # every line from offset 0 up to the boundary, recorded

    # Accounting balances (the second round is landed but not batched yet: behind, allowed here).
    lagging = _accounting(lake, log_dir, send_logs, "--allow-lag")
    rows = {t["topic"]: t for t in lagging["topics"]}  # type: ignore[attr-defined]
    for (topic, _), p in done.items():
        assert rows[topic]["expired"] == p["records"]
        assert rows[topic]["landed"] == rows[topic]["in_log"] == 2 * SELECTIONS  # landed = present + expired
    assert {f["problem"] for f in lagging["findings"]} == {"behind"}  # type: ignore[attr-defined]

    # A pass cut short after its manifest: the object is back (never deleted), counted once, and finished later.
    assert not victim.exists()
    victim.write_bytes(victim_bytes)
    _accounting(lake, log_dir, send_logs, "--allow-lag")

    # The batch commits the second round only, then expires with its run (a retention in the environment).
    second = pinpipe("batch", "--lake", str(lake), "--no-gold", env={"PINPIPE__LANDING__RETENTION_MS": "0"})
    assert second.returncode == 0, second.stderr
    assert f"total read {3 * SELECTIONS} " in second.stdout, second.stdout
    assert "finished 1 left by an interrupted pass" in second.stdout, second.stdout
    assert not victim.exists()
    assert all(len(paths) == 1 for paths in _landed(lake).values())  # only each partition's newest object is left
    third = pinpipe("batch", "--lake", str(lake), "--no-gold")
    assert third.returncode == 0 and "total read 0 " in third.stdout, third.stdout
    kept = _landed(lake)
    _sink(log_dir, lake)  # a restarted sink resumes after each partition's newest object: nothing is re-landed
    assert _landed(lake) == kept

    final = _accounting(lake, log_dir, send_logs)
    rows = {t["topic"]: t for t in final["topics"] if t["in_log"]}  # type: ignore[attr-defined]
    assert sorted(rows) == sorted(t for t, _ in done)  # the stream topics the API created hold nothing
    for topic, row in rows.items():
        assert row["landed"] == row["acked"] == row["batch_done"] == 2 * SELECTIONS, (topic, row)
        assert 0 < row["expired"] < row["landed"]
    human = pinpipe("accounting", "--lake", str(lake), "--log", str(log_dir))
    assert human.returncode == 0 and "expired" in human.stdout, human.stdout
    status = pinpipe("status", "--log", str(log_dir), "--lake", str(lake), "--json")
    assert status.returncode == 0, status.stderr
    look = orjson.loads(status.stdout.splitlines()[0])
    landed = {p["topic"]: p["sink"]["landed"] for p in look["partitions"] if p["log_end"]}
    assert landed == dict.fromkeys(rows, 2 * SELECTIONS), look["partitions"]  # the sink resumes from here
