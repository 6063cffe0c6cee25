"""The sink on S3 (moto) and the landed lake read back by PySpark, as the original's notebooks read it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pinpipe.cli import main
from pinpipe.config import LakeSettings
from pinpipe.errors import ConfigError
from pinpipe.lake.sink import LakeSink, encode_batch
from pinpipe.lake.store import Lake, landed_key
from pinpipe.log.memory import MemoryLog
from tests.fixtures.landed import assert_exactly_once, digests, landed_objects
from tests.fixtures.services import Service

pytestmark = pytest.mark.integration
GROUP = "sink-s3"


def _settings(moto: Service) -> LakeSettings:
    return LakeSettings.model_validate(
        {"endpoint": moto.url, "access_key_id": "testing", "secret_access_key": "testing"}
    )


@pytest.fixture
def bucket(moto: Service) -> str:
    import boto3

    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def log() -> Iterator[MemoryLog]:
    log = MemoryLog(uuid.uuid4().hex)
    log.ensure_topics(["s3t.pin", "streaming-s3t-geo"], 2)
    yield log


def _append(log: MemoryLog, topic: str, first: int, n: int) -> list[bytes]:
    values = [orjson.dumps({"index": i, "title": f"post {i}, with a comma"}) for i in range(first, first + n)]
    log.append(topic, values)
    return values


def test_lands_on_s3_and_resumes_after_an_uncommitted_object(moto: Service, bucket: str, log: MemoryLog) -> None:
    lake = Lake(f"s3://{bucket}/lake", _settings(moto))
    _append(log, "s3t.pin", 0, 300)
    _append(log, "streaming-s3t-geo", 0, 41)
    # A crashed run landed the first 17 records of partition 0 and never committed them.
    stored = [r.value for r in log.read("s3t.pin", 0, 0, 17)]
    assert lake.create(landed_key("s3t.pin", 0, 0), encode_batch(stored))
    assert not lake.create(landed_key("s3t.pin", 0, 0), b"other\n")  # conditional put on S3
    sink = LakeSink(log, lake, group=GROUP, flush_records=60, flush_seconds=0.2)
    stats = sink.run(until_idle=True)
    assert stats.records == 341 - 17
    before = digests(landed_objects(lake))
    assert landed_key("s3t.pin", 0, 17) in before
    _append(log, "s3t.pin", 300, 10)
    LakeSink(log, lake, group=GROUP, flush_records=60, flush_seconds=0.2).run(until_idle=True)
    after = digests(landed_objects(lake))
    assert {k: after[k] for k in before} == before
    assert assert_exactly_once(lake, log, GROUP) == 351


def test_cli_takes_the_s3_endpoint_and_keys_from_settings(
    moto: Service, bucket: str, log: MemoryLog, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _append(log, "s3t.pin", 0, 25)
    monkeypatch.setenv("PINPIPE__LAKE__ENDPOINT", moto.url)
    monkeypatch.setenv("PINPIPE__LAKE__ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("PINPIPE__LAKE__SECRET_ACCESS_KEY", "testing")
    main(["sink", "--log", log.url, "--lake", f"s3://{bucket}/cli", "--until-idle", "--flush-seconds", "0.1"])
    assert assert_exactly_once(Lake(f"s3://{bucket}/cli", _settings(moto)), log, "pinpipe-sink") == 25


def test_missing_bucket_is_a_config_error(moto: Service, log: MemoryLog) -> None:
    with pytest.raises(ConfigError, match="NoSuchBucket"):  # when the lake is opened, before anything is read
        lake = Lake(f"s3://no-such-{uuid.uuid4().hex[:8]}/lake", _settings(moto))
        LakeSink(log, lake, group=GROUP, flush_records=10, flush_seconds=0.1).run(until_idle=True)


def test_pyspark_reads_the_landed_lake(tmp_path: Path, log: MemoryLog) -> None:
    from pinpipe.engine import SparkEngine

    values = _append(log, "s3t.pin", 0, 500)
    lake = Lake(f"file://{tmp_path / 'lake'}")
    LakeSink(log, lake, group=GROUP, flush_records=100, flush_seconds=0.1).run(until_idle=True)
    spark = SparkEngine().session
    rows = spark.read.json(f"{lake.root}/topics/s3t.pin/partition=0/*.json").collect()
    sent_p0 = {r.value for r in log.read("s3t.pin", 0, 0, 1000)}
    assert sorted((r["index"], r["title"]) for r in rows) == sorted(
        (d["index"], d["title"]) for d in map(orjson.loads, sent_p0)
    )
    assert len(rows) + log.end_offset("s3t.pin", 1) == len(values)
