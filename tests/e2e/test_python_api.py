"""The Python API as a notebook uses it: the README's example, run as written against a lake of landed sample
records, gives what the CLI gives; ``import pinpipe`` stays light; a missing lake is named, never created."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pinpipe.lake.store import Lake
from pinpipe.log.embedded import EmbeddedLog
from pinpipe.source.sample import load_sample_records
from pinpipe.tables import KINDS, topic_name
from tests.fixtures.batch_lake import land

README = Path(__file__).resolve().parents[2] / "README.md"
PER_KIND = 400


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}


def readme_example() -> str:
    """The first ``python`` block of the README's "Python API" section."""
    text = README.read_text()
    section = text[text.index("\n## Python API\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no ```python block"
    return match.group(1)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180
    )


@pytest.mark.timeout(240)
def test_the_readme_example_runs_and_matches_the_cli(tmp_path: Path) -> None:
    (tmp_path / "pinpipe-data").mkdir()  # a writer creates a lake only under an existing directory
    lake = Lake(f"file://{tmp_path / 'pinpipe-data' / 'lake'}")
    land(lake, {kind: load_sample_records(kind)[:PER_KIND] for kind in KINDS}, per_object=150)

    done = _python(readme_example(), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split(" ", 1)[0]: line for line in done.stdout.splitlines()}
    assert lines["read"].split()[:2] == ["read", str(PER_KIND * len(KINDS))]

    cli = subprocess.run(
        [sys.executable, "-m", "pinpipe", "results", "--lake", lake.url, "--format", "json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    top = orjson.loads(cli.stdout)["top_category_by_country"]
    assert lines["top_category_by_country"] == f"top_category_by_country {len(top)} {top[0]}"

    again = _python("import pinpipe; print(pinpipe.run_batch('pinpipe-data/lake', gold=False).total.read)", tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "0"  # the example's run was recorded: nothing is left to process
    silver = ast.literal_eval(lines["silver"].split(" ", 1)[1])
    assert set(silver) == set(KINDS) and all(0 < n <= PER_KIND for n in silver.values())


def test_status_from_python_sees_what_landed_and_the_last_run(tmp_path: Path) -> None:
    records = {kind: load_sample_records(kind)[:PER_KIND] for kind in KINDS}
    land(Lake(f"file://{tmp_path / 'lake'}"), records, per_object=150)
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic_name("0affea73130b", kind) for kind in KINDS])
    for kind, rows in records.items():
        log.append(topic_name("0affea73130b", kind), [orjson.dumps(r) for r in rows])
    log.close()
    code = (
        "import json, pinpipe\n"
        "pinpipe.run_batch('lake', gold=False)\n"
        "print(json.dumps(pinpipe.status('log', 'lake').as_dict()))\n"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    look = orjson.loads(done.stdout)
    parts = {p["topic"]: p for p in look["partitions"]}
    assert set(parts) == {topic_name("0affea73130b", kind) for kind in KINDS}
    for p in parts.values():  # landed by hand: no committed position, the landed one comes from the objects
        assert (p["log_end"], p["sink"]["landed"], p["sink"]["committed"], p["sink"]["lag"]) == (400, 400, None, 0)
    assert look["last_run"]["read"] == PER_KIND * len(KINDS)
    assert all(s["last_write"] is not None for s in look["silver"])


def test_import_pinpipe_loads_no_stage(tmp_path: Path) -> None:
    probe = "import sys, pinpipe; print(sorted(m for m in ('pyarrow', 'deltalake', 'duckdb', 'pydantic') if m in sys.modules))"
    done = _python(probe, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    names = _python("import pinpipe; print(all(getattr(pinpipe, n) is not None for n in pinpipe.__all__))", tmp_path)
    assert names.stdout.strip() == "True", names.stdout + names.stderr


def test_a_missing_lake_is_named_and_not_created(tmp_path: Path) -> None:
    code = (
        "import pinpipe\n"
        "try:\n"
        "    pinpipe.read_gold('no-such-lake')\n"
        "except pinpipe.NotFoundError as exc:\n"
        "    print(exc.exit_code, exc)\n"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 there is no lake at file://"), done.stdout
    assert "no-such-lake" in done.stdout
    assert not (tmp_path / "no-such-lake").exists()


def test_a_script_using_the_api_exits_0_every_time(tmp_path: Path) -> None:
    """A script that writes and then reads tables must not die by SIGABRT at interpreter exit (native threads
    of delta-rs's Arrow filesystem; the same class as the CLI's exit, SPEC §8)."""
    records = {kind: load_sample_records(kind)[:100] for kind in KINDS}
    land(Lake(f"file://{tmp_path / 'lake'}"), records, per_object=50)
    log = EmbeddedLog(tmp_path / "log")
    log.ensure_topics([topic_name("0affea73130b", kind) for kind in KINDS])
    log.close()
    code = "import pinpipe\npinpipe.run_batch('lake', gold=False)\npinpipe.status('log', 'lake')\n"
    runs = [_python(code, tmp_path) for _ in range(6)]
    assert [r.returncode for r in runs] == [0] * 6, [r.stderr[-300:] for r in runs if r.returncode]
