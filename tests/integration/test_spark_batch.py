"""The batch job on the Spark engine (local mode): executors read, clean and write; the oracle's answers.

The cluster is :mod:`tests.integration.test_spark_cluster`; PySpark 3.5 is :mod:`tests.integration.test_spark35`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pinpipe.batch.job import run_batch
from pinpipe.config import SparkSettings
from pinpipe.engine import SparkEngine
from pinpipe.engine.spark import session_conf
from pinpipe.lake import delta
from pinpipe.lake.store import Lake
from pinpipe.synth.faults import send_list
from pinpipe.synth.oracle import expected_output
from pinpipe.tables import KINDS
from tests.fixtures.batch_lake import assert_batch_matches_oracle, land
from tests.fixtures.local_spark import spark_fixture

pytestmark = pytest.mark.integration

__all__ = ["spark_fixture"]

PREFIX = "0affea73130b"


def _versions(lake: Lake) -> dict[str, int | None]:
    parts = [(layer, k) for layer in ("silver", "quarantine") for k in KINDS]
    return {"/".join(p): delta.table_version(lake, *p) for p in parts}


def test_spark_batch_equals_the_oracle_and_a_rerun_commits_nothing(tmp_path: Path, spark: SparkEngine) -> None:
    sent = send_list(300, 1, resend_rate=0.1, conflict_rate=0.05, faults=0.05, iso_rate=0.3).by_kind()
    lake = Lake(f"file://{tmp_path}")
    land(lake, sent, per_object=97)
    result = run_batch(lake, spark, PREFIX, gold=False)
    assert_batch_matches_oracle(lake, result, sent)
    versions = _versions(lake)
    again = run_batch(lake, spark, PREFIX, gold=False)
    assert again.total.read == 0 and _versions(lake) == versions


def test_spark_batch_in_two_runs_updates_silver_as_the_oracle(tmp_path: Path, spark: SparkEngine) -> None:
    sent = send_list(400, 11, resend_rate=0.2, conflict_rate=0.2, faults=0.02).by_kind()
    lake = Lake(f"file://{tmp_path}")
    cuts = {kind: len(records) // 2 for kind, records in sent.items()}
    land(lake, {kind: records[: cuts[kind]] for kind, records in sent.items()}, per_object=97)
    first = run_batch(lake, spark, PREFIX, gold=False)
    for kind, records in sent.items():
        land(lake, {kind: records[cuts[kind] :]}, per_object=97, first_offset=cuts[kind])
    second = run_batch(lake, spark, PREFIX, gold=False)
    expected = expected_output(sent)
    for kind in KINDS:
        got = delta.read_table(lake, "silver", kind)
        assert got is not None
        assert got.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
        runs = first.kinds[kind], second.kinds[kind]
        assert sum(r.conflicts for r in runs) == expected.accounting[kind].conflicts, kind
        assert sum(r.read for r in runs) == expected.accounting[kind].read, kind
    assert sum(second.kinds[k].updated for k in KINDS) > 0  # the second run rewrote files (copy-on-write)


def test_a_running_application_session_is_used_and_left_running(spark: SparkEngine) -> None:
    inner = SparkEngine(SparkSettings(master="local[1]"))
    assert inner.session is spark.session and not inner.owned
    inner.close()
    assert spark.session.range(3).count() == 3


def test_batch_rejects_a_spark_conf_that_is_not_key_value(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pinpipe",
            "batch",
            "--lake",
            str(tmp_path),
            "--engine",
            "spark",
            "--spark-conf",
            "oops",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--spark-conf 'oops' is not KEY=VALUE" in proc.stderr


def test_spark_settings_come_from_the_environment_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "pinpipe.toml").write_text(
        '[spark]\nmaster = "spark://10.0.0.5:7077"\n[spark.conf]\n"spark.executor.memory" = "2g"\n'
    )
    env = {
        "PINPIPE__SPARK__CONF": "spark.cores.max=4,spark.sql.shuffle.partitions=8",
        "PINPIPE__SPARK__DRIVER_HOST": "10.0.0.9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pinpipe", "config", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**__import__("os").environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    import json

    spark = json.loads(proc.stdout)["spark"]
    assert spark["master"] == "spark://10.0.0.5:7077"  # the file
    assert spark["conf"] == {"spark.cores.max": "4", "spark.sql.shuffle.partitions": "8"}  # env wins over the file
    assert spark["driver_host"] == "10.0.0.9"


def test_batch_rejects_a_master_that_is_not_a_spark_url(tmp_path: Path) -> None:
    land(Lake(f"file://{tmp_path}"), {"pin": [{"index": 1}]})
    argv = [sys.executable, "-m", "pinpipe", "batch", "--lake", f"file://{tmp_path}", "--engine", "spark"]
    proc = subprocess.run([*argv, "--spark-master", "nonsense://x"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "spark master 'nonsense://x' is not a Spark master URL" in proc.stderr
    assert delta.table_version(Lake(f"file://{tmp_path}"), "silver", "pin") is None


def test_the_driver_binds_to_loopback_on_local_masters_and_where_told_on_a_cluster() -> None:
    local = session_conf(SparkSettings(master="local[4]", driver_host="10.1.2.3"))
    assert (local["spark.driver.bindAddress"], local["spark.driver.host"]) == ("127.0.0.1", "127.0.0.1")
    cluster = session_conf(SparkSettings(master="spark://10.0.0.5:7077", driver_host="10.1.2.3"))
    assert (cluster["spark.driver.bindAddress"], cluster["spark.driver.host"]) == ("10.1.2.3", "10.1.2.3")
    default = session_conf(SparkSettings(master="spark://10.0.0.5:7077", conf={"spark.sql.shuffle.partitions": "64"}))
    assert "spark.driver.bindAddress" not in default and "spark.driver.host" not in default  # Spark decides
    assert default["spark.sql.shuffle.partitions"] == "64"  # conf wins over pinpipe's defaults


def test_executor_written_files_commit_with_progress_and_lose_a_race_cleanly(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from pinpipe.engine.spark_io import LakeRef, write_parquet_task
    from pinpipe.errors import CommitConflictError
    from pinpipe.lake.data_files import WrittenFile, commit_files, table_files
    from pinpipe.tables import SILVER_SCHEMAS

    lake = Lake(f"file://{tmp_path}")
    schema = SILVER_SCHEMAS["user"]
    rows = pa.table({"ind": [1, 2], "user_name": ["a b", None], "age": [30, 40], "date_joined": [None, None]})
    task = write_parquet_task(LakeRef.of(lake), "silver/user/", schema)

    def write(table: pa.Table) -> list[WrittenFile]:
        return WrittenFile.rows(pa.Table.from_batches(list(task(iter(table.to_batches())))))

    commit_files(lake, ("silver", "user"), schema, write(rows), app_txns={"app": 5})
    assert delta.txn_version(lake, "user", "app") == 5 and delta.row_count(lake, "silver", "user") == 2
    first, second = (DeltaTable(lake.table_uri("silver", "user")) for _ in range(2))
    old = table_files(first)
    assert [(f.low, f.high, f.num_records) for f in old] == [(1, 2, 2)]  # statistics the pruning relies on
    changed = rows.set_column(2, "age", pa.array([31, 40]))
    commit_files(lake, ("silver", "user"), schema, write(changed), old, {"app": 7}, first)
    with pytest.raises(CommitConflictError):  # the same file removed again from the same snapshot
        commit_files(lake, ("silver", "user"), schema, write(changed), old, {"app": 9}, second)
    got = delta.read_table(lake, "silver", "user")
    assert got is not None and got.sort_by("ind").column("age").to_pylist() == [31, 40]
    assert delta.txn_version(lake, "user", "app") == 7


SUBMITTED = """
import json, sys
from pinpipe.batch.job import run_batch
from pinpipe.config import load_settings
from pinpipe.engine import open_engine
from pinpipe.lake.store import Lake

settings = load_settings()
with open_engine("spark", settings.spark) as engine:
    result = run_batch(Lake(sys.argv[1]), engine, settings.prefix, gold=False)
    conf = engine.session.sparkContext.getConf()
    out = {"master": engine.master, "app": conf.get("spark.app.name"), "read": result.total.read}
print("RESULT-JSON:" + json.dumps(out), flush=True)
"""


def test_under_spark_submit_the_submitted_master_is_used(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    import json

    import pyspark

    lake = Lake(f"file://{tmp_path / 'lake'}")
    land(lake, {"pin": [{"index": 1, "title": "a"}, {"index": 2}], "geo": [{"ind": 1}]})
    script = tmp_path / "submitted.py"
    script.write_text(SUBMITTED)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    argv = [str(submit), "--master", "local[1]", "--conf", f"spark.pyspark.python={sys.executable}"]
    argv += ["--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.driver.host=127.0.0.1"]
    env = {**os.environ, "SPARK_HOME": str(submit.parent.parent), "SPARK_LOCAL_IP": "127.0.0.1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([*argv, str(script), lake.url], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT-JSON:")]
    assert lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    got = json.loads(lines[-1][len("RESULT-JSON:") :])
    assert got == {"master": "local[1]", "app": "pinpipe", "read": 3}  # not pinpipe's default local[*]


def test_an_unreachable_standalone_master_exits_75_naming_it(tmp_path: Path) -> None:
    from tests.fixtures.services import free_port

    lake = Lake(f"file://{tmp_path}")
    land(lake, {"pin": [{"index": 1}]})
    master = f"spark://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "PINPIPE__SPARK__CONNECT_TIMEOUT_S": "2", "SPARK_LOCAL_IP": "127.0.0.1"}
    argv = [sys.executable, "-m", "pinpipe", "batch", "--lake", lake.url, "--engine", "spark"]
    # bounded well below the minute Spark's own client spends retrying such a master
    proc = subprocess.run([*argv, "--spark-master", master], capture_output=True, text=True, timeout=45, env=env)
    assert proc.returncode == 75, proc.stderr
    assert f"the Spark master {master} did not accept a connection within 2 s" in proc.stderr
    assert "spark.connect_timeout_s" in proc.stderr
    assert delta.table_version(lake, "silver", "pin") is None


def test_the_masters_of_a_standalone_url_are_read_with_their_ports() -> None:
    from pinpipe.engine.spark import master_addresses
    from pinpipe.errors import ConfigError

    assert master_addresses("spark://10.0.0.5:7077") == [("10.0.0.5", 7077)]
    assert master_addresses("spark://a:7077,b:7078") == [("a", 7077), ("b", 7078)]
    assert master_addresses("spark://host") == [("host", 7077)]
    assert master_addresses("local[2]") == [] and master_addresses("yarn") == []
    with pytest.raises(ConfigError, match="has no HOST:PORT"):
        master_addresses("spark://:x")


def test_a_silver_table_created_before_the_bucket_column_is_still_merged_by_ind(
    tmp_path: Path, spark: SparkEngine
) -> None:
    from deltalake import DeltaTable

    from pinpipe.tables import SILVER_SCHEMAS

    sent = send_list(300, 5, resend_rate=0.2, conflict_rate=0.2, faults=0.02).by_kind()
    lake = Lake(f"file://{tmp_path}")
    for kind in KINDS:  # the layout of an older release: the SPEC columns, no partitions
        DeltaTable.create(lake.table_uri("silver", kind), SILVER_SCHEMAS[kind])
    cuts = {kind: len(records) // 2 for kind, records in sent.items()}
    land(lake, {kind: records[: cuts[kind]] for kind, records in sent.items()}, per_object=97)
    run_batch(lake, spark, PREFIX, gold=False)
    for kind, records in sent.items():
        land(lake, {kind: records[cuts[kind] :]}, per_object=97, first_offset=cuts[kind])
    run_batch(lake, spark, PREFIX, gold=False)
    expected = expected_output(sent)
    for kind in KINDS:
        dt = delta.open_table(lake, "silver", kind)
        assert dt is not None and not dt.metadata().partition_columns  # left as it was
        got = delta.read_table(lake, "silver", kind)
        assert got is not None
        assert got.sort_by("ind").to_pylist() == expected.silver_table(kind).to_pylist(), kind
