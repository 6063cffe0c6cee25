"""The Lake contract, run against every backend: memory://, file:// and s3:// (moto).

Each test gets a fresh empty lake. ``delta`` backends also hold Delta tables through ``table_uri`` and
``storage_options``, which is what every Delta writer in pinpipe relies on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from pinpipe.config import LakeSettings
from pinpipe.errors import ConfigError, StoreUnavailableError
from pinpipe.lake.store import Lake, landed_key, parse_landed_key
from tests.fixtures.services import Service, free_port


@dataclass
class LakeBackend:
    lake: Lake
    delta: bool


def _s3(moto: Service, bucket: str, endpoint: str | None = None) -> Lake:
    settings = LakeSettings.model_validate(
        {"endpoint": endpoint or moto.url, "access_key_id": "testing", "secret_access_key": "testing"}
    )
    return Lake(f"s3://{bucket}/contract", settings)


@pytest.fixture(params=["memory", "file", pytest.param("s3", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LakeBackend]:
    if request.param == "memory":
        yield LakeBackend(Lake(f"memory://{uuid.uuid4().hex}"), delta=False)
    elif request.param == "file":
        (tmp_path / "lake").mkdir()
        yield LakeBackend(Lake(f"file://{tmp_path / 'lake'}"), delta=True)
    else:
        import boto3

        moto: Service = request.getfixturevalue("moto")
        bucket = f"lake-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        ).create_bucket(Bucket=bucket)
        yield LakeBackend(_s3(moto, bucket), delta=True)


def test_put_then_get_round_trips_bytes(backend: LakeBackend) -> None:
    lake = backend.lake
    data = "line one, with a comma\n行二\n".encode() + bytes(range(256))
    lake.put("a/b/c.json", data)
    assert lake.get("a/b/c.json") == data
    lake.put("a/b/c.json", b"replaced")
    assert lake.get("a/b/c.json") == b"replaced"


def test_a_missing_object_is_none_and_deleting_it_is_harmless(backend: LakeBackend) -> None:
    assert backend.lake.get("no/such/key.json") is None
    backend.lake.delete("no/such/key.json")
    assert backend.lake.list("no/") == []


def test_create_never_overwrites(backend: LakeBackend) -> None:
    lake = backend.lake
    assert lake.create("x/1.json", b"first") is True
    assert lake.create("x/1.json", b"second") is False
    assert lake.get("x/1.json") == b"first"


def test_list_is_sorted_and_scoped_by_prefix(backend: LakeBackend) -> None:
    lake = backend.lake
    keys = [landed_key("t.pin", p, o) for p in (1, 0) for o in (2000, 0, 1000)]
    for key in keys:
        lake.put(key, key.encode())
    lake.put("other/z.json", b"z")
    listed = lake.list("topics/t.pin/")
    assert [o.key for o in listed] == sorted(keys)
    assert [o.size for o in listed] == [len(k) for k in sorted(keys)]
    assert [parse_landed_key(o.key) for o in listed][:3] == [("t.pin", 0, 0), ("t.pin", 0, 1000), ("t.pin", 0, 2000)]
    lake.delete(keys[0])
    assert keys[0] not in {o.key for o in lake.list()}


def test_delta_tables_live_at_table_uri(backend: LakeBackend) -> None:
    lake = backend.lake
    if not backend.delta:
        with pytest.raises(ConfigError):
            lake.table_uri("silver", "pin")
        return
    uri = lake.table_uri("silver", "pin")
    rows = pa.table({"ind": pa.array([3, 1, 2], pa.int64()), "v": ["c", "a", "b"]})
    write_deltalake(uri, rows, storage_options=lake.storage_options)
    back = DeltaTable(uri, storage_options=lake.storage_options).to_pyarrow_table().sort_by("ind")
    assert back.column("v").to_pylist() == ["a", "b", "c"]
    assert any(o.key.startswith("silver/pin/_delta_log/") for o in lake.list("silver/pin/"))


@pytest.mark.integration
def test_an_unreachable_store_is_retryable(moto: Service) -> None:
    """Only a remote store can be unreachable; memory:// and file:// have no such state. Opening an S3 lake asks
    the bucket, so that is where an unreachable store shows."""
    with pytest.raises(StoreUnavailableError):
        _s3(moto, "any-bucket", endpoint=f"http://127.0.0.1:{free_port()}")
