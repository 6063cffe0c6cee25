"""Temporary AWS keys: ``lake.session_token`` goes wherever the lake's keys go — obstore's ``S3Store``, delta-rs's
storage options, the Spark executors' lake reference — and ``pinpipe config`` masks it.

Against a moto server that checks signatures (``tests.fixtures.aws_auth``): the role's temporary keys work only
with their token, so each store call below fails if the token did not reach that store.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from pinpipe.config import LakeSettings
from pinpipe.engine.spark_io import LakeRef
from pinpipe.errors import ConfigError
from pinpipe.lake.store import Lake
from tests.fixtures.aws_auth import BUCKET, SignedS3, require_signed_requests
from tests.fixtures.services import moto_server, run_pinpipe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedS3]:
    with moto_server(tmp_path_factory.mktemp("moto-signed")) as moto:
        yield require_signed_requests(moto)


def _settings(s3: SignedS3, token: bool = True) -> LakeSettings:
    keys = s3.temporary
    return LakeSettings(
        endpoint=s3.url,
        access_key_id=keys["AccessKeyId"],
        secret_access_key=keys["SecretAccessKey"],
        session_token=keys["SessionToken"] if token else None,
    )


def test_the_server_refuses_temporary_keys_without_their_token(signed: SignedS3) -> None:
    """The control: moto really checks (boto3 itself, same keys, token left out, is refused)."""
    import botocore.exceptions

    keys = signed.temporary
    bare = signed.client("s3", aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as info:
        bare.list_objects_v2(Bucket=BUCKET)
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert signed.client("s3").list_objects_v2(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_the_session_token_reaches_obstore_delta_rs_and_the_executors(signed: SignedS3) -> None:
    lake = Lake(f"s3://{BUCKET}/with-token", _settings(signed))
    lake.put("topics/x/partition=0/x+0+0000000000.json", b'{"ind": 1}\n')
    assert [o.key for o in lake.list("topics/")] == ["topics/x/partition=0/x+0+0000000000.json"]

    assert lake.storage_options["AWS_SESSION_TOKEN"] == signed.temporary["SessionToken"]
    table = pa.table({"ind": [1, 2, 3]})
    write_deltalake(lake.table_uri("silver", "t"), table, storage_options=lake.storage_options)
    read = DeltaTable(lake.table_uri("silver", "t"), storage_options=lake.storage_options).to_pyarrow_table()
    assert read.column("ind").to_pylist() == [1, 2, 3]

    ref = LakeRef.of(lake)  # what a Spark task gets: it opens its own store from these settings
    assert ref.settings.session_token is not None
    assert ref.settings.session_token.get_secret_value() == signed.temporary["SessionToken"]
    assert ref.open().get("topics/x/partition=0/x+0+0000000000.json") == b'{"ind": 1}\n'


def test_without_the_token_obstore_and_delta_rs_are_refused(signed: SignedS3) -> None:
    with pytest.raises(ConfigError, match="InvalidAccessKeyId"):
        Lake(f"s3://{BUCKET}/no-token", _settings(signed, token=False))
    good = Lake(f"s3://{BUCKET}/delta-control", _settings(signed))
    write_deltalake(good.table_uri("t"), pa.table({"ind": [1]}), storage_options=good.storage_options)
    options = {k: v for k, v in good.storage_options.items() if k != "AWS_SESSION_TOKEN"}
    with pytest.raises(OSError, match=r"privileges|403|InvalidAccessKeyId"):
        DeltaTable(good.table_uri("t"), storage_options=options).to_pyarrow_table()


def _pinpipe(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_pinpipe(*args, cwd=cwd, env=env, clear=("PINPIPE", "AWS_"))


def test_pinpipe_config_masks_the_session_token(signed: SignedS3, tmp_path: Path) -> None:
    """Through the real CLI (the DAG test runs the pipeline's commands with the token from the environment)."""
    keys = signed.temporary
    env = {
        "PINPIPE__LAKE__URL": f"s3://{BUCKET}/with-token",
        "PINPIPE__LAKE__ENDPOINT": signed.url,
        "PINPIPE__LAKE__ACCESS_KEY_ID": keys["AccessKeyId"],
        "PINPIPE__LAKE__SECRET_ACCESS_KEY": keys["SecretAccessKey"],
        "PINPIPE__LAKE__SESSION_TOKEN": keys["SessionToken"],
    }
    for args in (("config",), ("config", "--json")):
        proc = _pinpipe(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert keys["SessionToken"] not in proc.stdout + proc.stderr
        assert keys["SecretAccessKey"] not in proc.stdout + proc.stderr
    shown = json.loads(_pinpipe("config", "--json", cwd=tmp_path, env=env).stdout)["lake"]
    assert shown["session_token"] == shown["secret_access_key"] == "**********"


def test_a_session_token_without_its_keys_is_a_configuration_error(tmp_path: Path) -> None:
    proc = _pinpipe("config", cwd=tmp_path, env={"PINPIPE__LAKE__SESSION_TOKEN": "lonely-token"})
    assert proc.returncode == 2
    assert "lake.session_token is set without lake.access_key_id and lake.secret_access_key" in proc.stderr
    assert "lonely-token" not in proc.stderr
