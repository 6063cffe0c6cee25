"""``pinpipe vacuum`` and the pass ``pinpipe batch`` runs, through the real script on a lake two daily runs wrote.

The second day changes old ``ind`` s, so silver's upserts rewrite files and gold is overwritten: their old files
leave the tables' versions but stay in the store until a vacuum deletes them — exactly those, and only once they
are older than the retention.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.ops.vacuum import LAST_PASS, TABLES
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS
from tests.fixtures.batch_lake import land
from tests.fixtures.services import run_pinpipe

CHANGED = {"pin": ("title", "changed"), "geo": ("country", "Changed"), "user": ("age", 77)}


def _pinpipe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_pinpipe(*args, cwd=cwd, env=env, timeout=300)


def _on_disk(table: Path) -> set[str]:
    """The data files in a table's directory, relative to it."""
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def _referenced(uri: str) -> set[str]:
    """The data files of a table's current version, relative to it."""
    return {str(p) for p in pa.table(DeltaTable(uri).get_add_actions(flatten=True)).column("path").to_pylist()}


def _day_after(sent: dict[str, list[Any]]) -> dict[str, list[Any]]:
    key = {"pin": "index", "geo": "ind", "user": "ind"}
    later: dict[str, list[Any]] = {}
    for kind, records in sent.items():
        good = [r for r in records if isinstance(r, dict) and isinstance(r.get(key[kind]), int)][::7]
        field, value = CHANGED[kind]
        later[kind] = [{**r, field: value} for r in good]
    return later


@pytest.fixture()
def two_days(tmp_path: Path) -> tuple[Path, dict[str, list[Any]]]:
    """A lake after two ``pinpipe batch`` runs (the second changing every 7th ``ind``), with the batch's own pass
    off; and everything sent."""
    root = tmp_path / "lake"
    lake = Lake(f"file://{root}")
    sent = send_list(600, 4, resend_rate=0.1, faults=0.03).by_kind()
    land(lake, sent, per_object=50)
    off = {"PINPIPE__VACUUM__WITH_BATCH": "false"}
    assert _pinpipe("batch", "--lake", str(root), cwd=tmp_path, env=off).returncode == 0
    later = _day_after(sent)
    land(lake, later, per_object=50, first_offset=max(len(r) for r in sent.values()))
    done = _pinpipe("batch", "--lake", str(root), cwd=tmp_path, env=off)
    assert done.returncode == 0, done.stderr
    assert "vacuum" not in done.stdout
    return root, {kind: [*sent[kind], *later[kind]] for kind in KINDS}


def test_vacuum_deletes_exactly_the_files_no_version_needs(two_days: tuple[Path, dict[str, list[Any]]]) -> None:
    root, everything = two_days
    lake = Lake(f"file://{root}")
    tables = {"/".join(parts): root.joinpath(*parts) for parts in TABLES if root.joinpath(*parts).exists()}
    unneeded = {name: _on_disk(path) - _referenced(str(path)) for name, path in tables.items()}
    assert all(unneeded[f"silver/{kind}"] for kind in KINDS)  # rewritten by the second day's updates
    assert any(unneeded[name] for name in tables if name.startswith("gold/"))  # overwritten

    kept = _pinpipe("vacuum", "--lake", str(root), "--json", cwd=root.parent)  # the default retention, 168 h
    assert kept.returncode == 0, kept.stderr
    assert all(files == [] for files in json.loads(kept.stdout)["tables"].values())

    dry = _pinpipe("vacuum", "--lake", str(root), "--retention-hours", "0", "--dry-run", "--json", cwd=root.parent)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["tables"]
    assert {name: set(files) for name, files in planned.items() if files} == {n: f for n, f in unneeded.items() if f}
    assert all(_on_disk(path) - _referenced(str(path)) == unneeded[name] for name, path in tables.items())

    done = _pinpipe("vacuum", "--lake", str(root), "--retention-hours", "0", cwd=root.parent)
    assert done.returncode == 0, done.stderr
    total = sum(len(f) for f in unneeded.values())
    assert f"vacuum: deleted {total} data files of {len(tables)} tables (retention 0 h)" in done.stdout
    for name, path in tables.items():
        assert _on_disk(path) == _referenced(str(path)), name
    expected = expected_output(everything)
    for kind in KINDS:
        got = delta.read_table(lake, "silver", kind)
        assert got is not None and got.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist()
    again = _pinpipe("batch", "--lake", str(root), cwd=root.parent)  # nothing new: the lake still works
    assert again.returncode == 0, again.stderr


def test_the_batch_vacuums_once_per_interval(two_days: tuple[Path, dict[str, list[Any]]]) -> None:
    root, _ = two_days
    lake = Lake(f"file://{root}")
    silver = root / "silver" / "pin"
    before = _on_disk(silver) - _referenced(str(silver))
    env = {"PINPIPE__VACUUM__RETENTION_HOURS": "0"}
    first = _pinpipe("batch", "--lake", str(root), cwd=root.parent, env=env)
    assert first.returncode == 0, first.stderr
    assert "vacuum: deleted" in first.stdout and before and _on_disk(silver) == _referenced(str(silver))
    assert lake.get(LAST_PASS) is not None
    second = _pinpipe("batch", "--lake", str(root), cwd=root.parent, env=env)  # within vacuum.every_hours
    assert second.returncode == 0 and "vacuum" not in second.stdout


def test_a_lake_younger_than_the_retention_is_not_vacuumed_yet(tmp_path: Path) -> None:
    """No tombstone of a lake whose first batch ran less than the retention ago can be due: the batch's first
    pass only starts the clock (the next comes ``vacuum.every_hours`` later)."""
    root = tmp_path / "lake"
    land(Lake(f"file://{root}"), send_list(100, 2).by_kind(), per_object=50)
    done = _pinpipe("batch", "--lake", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "vacuum" not in done.stdout
    record = json.loads((root / LAST_PASS).read_bytes())
    assert record["files"] == 0 and record["retention_hours"] == 168


def test_a_negative_retention_names_its_flag(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    done = _pinpipe("vacuum", "--lake", str(tmp_path / "lake"), "--retention-hours", "-1", cwd=tmp_path)
    assert done.returncode == 2
    assert "--retention-hours -1" in done.stderr
