"""The production configuration end to end, against the all-embedded one on the same input.

Production: MariaDB source → the API (uvicorn on loopback) appending to Kafka (Tansu) ← the emulator in both
dialects → the sink landing on S3 (moto) → the batch job on PySpark → silver/gold Delta on S3; and the stream
worker reading Kafka as a consumer group into a second S3 lake. The batch job runs on a real standalone Spark
cluster (a master and two one-core workers on 127.0.0.1, a 1 GiB driver): its executors fetch the landed objects
from S3 and write silver's files there. Embedded: the same MariaDB rows and emulator
seed → the API on the embedded log → the sink on a ``file://`` lake → the batch job on DuckDB.

Checks: the accounting of the production lake balances (send logs → Kafka read to EOF → S3 landing → Spark batch
→ silver), the nine gold tables are identical in both runs, and the stream lake's silver and quarantine equal
the batch lake's.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pinpipe.batch.gold import read_gold_tables
from pinpipe.batch.job import run_batch
from pinpipe.checks.accounting import account
from pinpipe.config import LakeSettings, Settings, SparkSettings, load_settings
from pinpipe.emulate.emulator import EmulateOptions, emulate
from pinpipe.engine import open_engine
from pinpipe.ingest.app import create_app
from pinpipe.lake.sink import LakeSink
from pinpipe.lake.store import Lake
from pinpipe.log import EventLog, open_log
from pinpipe.source.database import create_source_engine
from pinpipe.source.load import SampleOrigin, init_source
from tests.fixtures.databases import DatabaseServer
from tests.fixtures.services import Service, free_port
from tests.fixtures.spark_cluster import SparkCluster, spark_cluster_fixture

__all__ = ["spark_cluster_fixture"]

pytestmark = pytest.mark.integration

SELECTIONS = 250
SEED = 100


@contextlib.contextmanager
def serve(settings: Settings, event_log: EventLog) -> Iterator[str]:
    """The ingestion API over ``event_log`` under uvicorn in a thread, on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, event_log), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def send_both_dialects(settings: Settings, event_log: EventLog, db_url: str, folder: Path) -> list[Path]:
    logs = []
    with serve(settings, event_log) as api:
        for dialect in ("batch", "stream"):
            path = folder / f"send-{dialect}.jsonl"
            opts = EmulateOptions(
                dialect=dialect, api=api, db_url=db_url, count=SELECTIONS, seed=SEED, send_log=path,
                prefix=settings.prefix, concurrency=8,
            )  # fmt: skip
            assert emulate(opts).records_acked == 3 * SELECTIONS
            logs.append(path)
    return logs


@dataclass
class Runs:
    prefix: str
    kafka_url: str
    prod_lake: Lake
    stream_lake: Lake
    embedded_lake: Lake
    send_logs: list[Path]
    seconds: dict[str, float]


def _s3_lake(moto: Service, bucket: str) -> Lake:
    settings = LakeSettings.model_validate(
        {"endpoint": moto.url, "access_key_id": "testing", "secret_access_key": "testing"}
    )
    return Lake(f"s3://{bucket}/lake", settings)


@pytest.fixture(scope="module")
def runs(
    mariadb: DatabaseServer,
    kafka: Service,
    moto: Service,
    spark_cluster: SparkCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Runs:
    import boto3

    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    folder = tmp_path_factory.mktemp("production")
    db_url = mariadb.new_database()
    engine = create_source_engine(db_url)
    init_source(engine, SampleOrigin())
    engine.dispose()
    seconds["mariadb source"] = time.monotonic() - t0
    s3 = boto3.client(
        "s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    for bucket in (f"prod-{tag}", f"stream-{tag}"):
        s3.create_bucket(Bucket=bucket)
    prefix = f"prod{tag}"
    settings = load_settings({"prefix": prefix})
    kafka_url = f"kafka://127.0.0.1:{kafka.port}"

    t = time.monotonic()
    prod_lake = _s3_lake(moto, f"prod-{tag}")
    with open_log(kafka_url) as kafka_log:
        send_logs = send_both_dialects(settings, kafka_log, db_url, folder)
        seconds["emulate → API → Kafka"] = time.monotonic() - t
        t = time.monotonic()
        LakeSink(kafka_log, prod_lake, group="pinpipe-sink", flush_records=500, flush_seconds=0.5).run(until_idle=True)
        seconds["sink Kafka → S3"] = time.monotonic() - t
    t = time.monotonic()
    before = {app["id"] for app in spark_cluster.status()["completedapps"]}
    conf = dict(item.split("=", 1) for item in spark_cluster.spark_conf())
    with open_engine("spark", SparkSettings(master=spark_cluster.master_url, conf=conf)) as spark:
        run_batch(prod_lake, spark, prefix)
    apps = [app for app in spark_cluster.status()["completedapps"] if app["id"] not in before]
    assert len(apps) == 1 and apps[0]["cores"] == 2, apps  # the batch ran as an application of the cluster
    seconds["batch on the Spark cluster (incl. session start)"] = time.monotonic() - t

    t = time.monotonic()
    embedded = folder / "embedded"
    embedded.mkdir(parents=True, exist_ok=True)  # a writer creates a lake only under an existing directory
    embedded_lake = Lake(f"file://{embedded / 'lake'}")
    with open_log(f"file://{embedded / 'log'}") as file_log:
        send_both_dialects(load_settings(), file_log, db_url, embedded)
        LakeSink(file_log, embedded_lake, group="pinpipe-sink", flush_records=500, flush_seconds=0.3).run(
            until_idle=True
        )
    with open_engine("duckdb") as duck:
        run_batch(embedded_lake, duck, load_settings().prefix)
    seconds["embedded run (API, sink, DuckDB batch)"] = time.monotonic() - t
    print("production e2e timings:", {k: round(v, 1) for k, v in seconds.items()})
    return Runs(prefix, kafka_url, prod_lake, _s3_lake(moto, f"stream-{tag}"), embedded_lake, send_logs, seconds)


def _rows(tables: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: table.to_pylist() for name, table in tables.items()}


def test_production_gold_equals_the_embedded_run_and_accounting_balances(runs: Runs) -> None:
    with open_log(runs.kafka_url) as kafka_log:
        report = account(runs.prod_lake, runs.prefix, event_log=kafka_log, send_logs=runs.send_logs)
    assert report.failures() == [], [f.message for f in report.findings]
    assert sum(t.in_log or 0 for t in report.topics) == 2 * 3 * SELECTIONS
    assert sum(t.landed or 0 for t in report.topics) == 2 * 3 * SELECTIONS
    prod = _rows(read_gold_tables(runs.prod_lake))
    embedded = _rows(read_gold_tables(runs.embedded_lake))
    assert len(prod) == 9
    assert sum(len(rows) for rows in prod.values()) > 0
    assert prod == embedded


def test_stream_worker_from_kafka_matches_the_batch_silver(runs: Runs) -> None:
    from pinpipe.checks.parity import compare_lakes
    from pinpipe.stream import worker as stream

    t = time.monotonic()
    feed = stream.open_feed(runs.kafka_url, runs.prefix, f"stream-{uuid.uuid4().hex[:6]}")
    with open_engine("duckdb") as duck:
        worker = stream.StreamWorker(feed, runs.stream_lake, duck, stream.StreamOptions(runs.prefix, idle_stop_s=4.0))
        worker.run(threading.Event())
    print(f"stream Kafka → S3 silver: {time.monotonic() - t:.1f} s")
    parity = compare_lakes(runs.stream_lake, runs.prod_lake)
    assert parity.identical, [(t.table, t.differing, t.examples[:2]) for t in parity.tables if not t.identical]
    assert all(t.rows_a > 0 for t in parity.tables if t.table.startswith("silver/"))
