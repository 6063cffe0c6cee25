"""The data-quality gate over ``<lake>/_meta/runs``: which run it judges and when it fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pinpipe.checks.quality import check_run, enforce
from pinpipe.cli import main
from pinpipe.errors import AccountingError, InvalidInputError, NotFoundError
from pinpipe.lake import delta
from pinpipe.lake.runs import RUNS_SCHEMA
from pinpipe.lake.store import Lake

DAY = datetime(2024, 8, 18, tzinfo=UTC)


def _record(lake: Lake, run_id: str, finished: datetime, **counts: Any) -> None:
    """Append one batch run (the same counts for each kind) as ``pinpipe batch`` records it."""
    interval = counts.pop("interval", (None, None))
    row = {"read": 10, "inserted": 6, "updated": 1, "collapsed": 2, "conflicts": 0, "quarantined": 1, **counts}
    rows = [
        {
            "run_id": run_id,
            "path": "batch",
            "kind": kind,
            "started_at": finished - timedelta(seconds=5),
            "finished_at": finished,
            "interval_start": interval[0],
            "interval_end": interval[1],
            "objects": 1,
            "notes": "{}",
            **row,
        }
        for kind in ("pin", "geo", "user")
    ]
    delta.append(lake, pa.Table.from_pylist(rows, schema=RUNS_SCHEMA), "_meta", "runs")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path}/lake")


def test_the_latest_balanced_run_passes(lake: Lake) -> None:
    _record(lake, "old", DAY, quarantined=9, inserted=0, updated=0, collapsed=1)
    _record(lake, "new", DAY + timedelta(hours=1))
    verdict = check_run(lake, 0.2)
    assert verdict.run_id == "new"
    assert [k.kind for k in verdict.kinds] == ["geo", "pin", "user"]
    assert verdict.ok
    enforce(verdict)


def test_an_unbalanced_run_is_an_accounting_error(lake: Lake) -> None:
    _record(lake, "lost", DAY, inserted=5)  # 10 read, 9 accounted for
    verdict = check_run(lake, 0.5)
    assert [k.balanced for k in verdict.kinds] == [False, False, False]
    with pytest.raises(AccountingError, match="does not balance"):
        enforce(verdict)


def test_too_large_a_quarantine_share_fails(lake: Lake) -> None:
    _record(lake, "dirty", DAY)  # 1 of 10 quarantined
    assert check_run(lake, 0.1).ok
    verdict = check_run(lake, 0.05)
    assert verdict.too_dirty and not verdict.unbalanced
    with pytest.raises(InvalidInputError, match=r"quarantined more than 5\.00%"):
        enforce(verdict)


def test_a_run_that_read_nothing_fails_unless_empty_runs_are_allowed(lake: Lake) -> None:
    _record(lake, "empty", DAY, read=0, inserted=0, updated=0, collapsed=0, quarantined=0)
    verdict = check_run(lake, 0.05)
    assert verdict.empty and not verdict.unbalanced and not verdict.too_dirty and not verdict.ok
    assert verdict.lines()[-1] == "quality gate: FAILED"
    with pytest.raises(InvalidInputError, match="read no record"):
        enforce(verdict)
    allowed = check_run(lake, 0.05, allow_empty=True)
    assert allowed.ok and allowed.lines()[-1] == "quality gate: passed"
    enforce(allowed)


def test_the_run_of_an_interval_is_chosen_over_a_later_one(lake: Lake) -> None:
    _record(lake, "day1", DAY, interval=(DAY, DAY + timedelta(days=1)))
    _record(lake, "manual", DAY + timedelta(days=2), inserted=0)
    verdict = check_run(lake, 0.2, interval_start=DAY, interval_end=DAY + timedelta(days=1))
    assert verdict.run_id == "day1" and verdict.ok
    assert check_run(lake, 0.2, run_id="manual").unbalanced
    with pytest.raises(NotFoundError, match="no batch run recorded for the interval"):
        check_run(lake, 0.2, interval_start=DAY - timedelta(days=1), interval_end=DAY)


def test_a_lake_without_runs_says_to_run_batch_first(lake: Lake) -> None:
    with pytest.raises(NotFoundError, match="no batch run"):
        check_run(lake, 0.05)


def test_the_command_exits_3_on_bad_accounting(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    _record(lake, "good", DAY, interval=(DAY, DAY + timedelta(days=1)))
    args = ["quality", "--lake", lake.url, "--max-quarantine-share", "0.2"]
    main([*args, "--interval-start", "2024-08-18T00:00:00+00:00", "--interval-end", "2024-08-19"])
    assert "quality gate: passed" in capsys.readouterr().out
    _record(lake, "bad", DAY + timedelta(days=1), collapsed=0)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 3
