"""``pinpipe_daily`` on an S3 lake whose credentials come from an Airflow AWS Connection through ``AwsBaseHook``.

The lake is a moto server that checks every signature (``tests.fixtures.aws_auth``): the role's temporary keys
are accepted only with their session token, and the IAM user's own keys may do nothing but assume the role. So a
run that lands, batches, gates and reports there proves that the token (or the hook's assumed role) reached
every ``pinpipe`` command of the run; the same Connection without its token must fail. The worker's environment
holds other AWS keys (``testing``, refused by this server): the Connection's must win. Real Airflow 3 runs the
DAG file deployed alone (``dag.test()``), real ``pinpipe`` commands run the pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from pinpipe.batch.gold import GOLD_TABLES
from tests.fixtures.airflow import DAG_TEST, AirflowHome, airflow_home, deployed_dag
from tests.fixtures.aws_auth import BUCKET, SignedS3, require_signed_requests
from tests.fixtures.services import free_port, moto_server, start, venv_bin

__all__ = ["airflow_home"]  # the fixture, imported for pytest

pytestmark = pytest.mark.integration

SCHEDULED_RUN = "CONF = {}\nSCHEDULED = True\n" + DAG_TEST


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedS3]:
    with moto_server(tmp_path_factory.mktemp("moto-signed-dag")) as moto:
        yield require_signed_requests(moto)


@pytest.fixture(scope="module")
def filled_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An event log holding 200 records per source table, sent by the emulator through the real API."""
    work = tmp_path_factory.mktemp("filled-log")
    db, log = f"sqlite:///{work / 'source.db'}", f"file://{work / 'log'}"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PINPIPE")}
    pinpipe = venv_bin("pinpipe")
    subprocess.run([pinpipe, "source", "init", "--db", db], cwd=work, env=env, check=True, capture_output=True)
    port = free_port()
    api = start("api", [pinpipe, "api", "--port", str(port), "--log", log], port, work, env=env, timeout=60)
    try:
        emulate = ["emulate", "--dialect", "batch", "--api", api.url, "--db", db, "--count", "200"]
        subprocess.run(
            [pinpipe, *emulate, "--records-per-request", "20"], cwd=work, env=env, check=True, capture_output=True
        )
    finally:
        api.stop()
    return work / "log"


def _deployment(tmp_path: Path, filled_log: Path, lake_prefix: str) -> tuple[Path, dict[str, str]]:
    """A working directory with its own copy of the log (the sink's position included) and the Variables of a
    deployment that lands it in ``s3://BUCKET/<lake_prefix>`` — no endpoint, region or key among them."""
    work = tmp_path / "work"
    shutil.copytree(filled_log, work / "log")
    variables = {
        "pinpipe_executable": venv_bin("pinpipe"),
        "pinpipe_workdir": str(work),
        "pinpipe_lake_url": f"s3://{BUCKET}/{lake_prefix}",
        "pinpipe_log_url": f"file://{work / 'log'}",
    }
    return work, variables


def _connection(signed: SignedS3, login: str, password: str, **extra: Any) -> dict[str, Any]:
    """An AWS Connection to the moto server (its endpoint and region in the extra, as AwsBaseHook reads them)."""
    extra = {"endpoint_url": signed.url, "region_name": "us-east-1", **extra}
    return {"conn_type": "aws", "login": login, "password": password, "extra": extra}


def _gold_tables(signed: SignedS3, lake_prefix: str) -> list[str]:
    """The gold tables with a Delta log under the lake, listed with the role's temporary keys."""
    pages = signed.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{lake_prefix}/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return sorted({key.split("/")[2] for key in keys if key.split("/")[1:2] == ["gold"] and "/_delta_log/" in key})


def _assert_no_secret(output: str, *secrets: str) -> None:
    leaked = [secret[:6] + "…" for secret in secrets if secret in output]
    assert not leaked, f"secrets in the task logs: {leaked}"


def test_a_connection_with_a_session_token_runs_the_whole_dag_on_the_lake(
    airflow_home: AirflowHome, signed: SignedS3, filled_log: Path, tmp_path: Path
) -> None:
    keys = signed.temporary
    _, variables = _deployment(tmp_path, filled_log, "with-token")
    conn = _connection(signed, keys["AccessKeyId"], keys["SecretAccessKey"], aws_session_token=keys["SessionToken"])
    result, output = airflow_home.run_logged(
        SCHEDULED_RUN,
        timeout=400,
        dag_folder=deployed_dag(tmp_path),
        variables=variables,
        connections={"pinpipe_lake": conn},
    )
    assert result["state"] == "success", output[-4000:]
    assert {task: state for task, (state, _) in result["tasks"].items()} == dict.fromkeys(
        ("land", "batch", "quality", "report"), "success"
    )
    assert _gold_tables(signed, "with-token") == sorted(GOLD_TABLES)
    assert output.count("lake credentials: AWS Connection 'pinpipe_lake' (temporary, with a session token)") == 4
    assert "sink --until-idle" in output  # the commands' lines are in what was searched for secrets
    _assert_no_secret(output, keys["SecretAccessKey"], keys["SessionToken"])


def test_the_same_connection_without_its_token_is_refused(
    airflow_home: AirflowHome, signed: SignedS3, filled_log: Path, tmp_path: Path
) -> None:
    """The control: the lake refuses the temporary keys alone, so the run above passed on the token."""
    keys = signed.temporary
    _, variables = _deployment(tmp_path, filled_log, "without-token")
    result, output = airflow_home.run_logged(
        SCHEDULED_RUN,
        timeout=300,
        dag_folder=deployed_dag(tmp_path),
        variables=variables,
        connections={"pinpipe_lake": _connection(signed, keys["AccessKeyId"], keys["SecretAccessKey"])},
    )
    assert result["state"] == "failed"
    assert result["tasks"]["land"] == ["failed", 1]  # exit 2: a refused key is not retried
    assert "InvalidAccessKeyId" in output
    assert _gold_tables(signed, "without-token") == []


def test_a_connection_with_a_role_arn_reaches_the_lake_as_the_assumed_role(
    airflow_home: AirflowHome, signed: SignedS3, filled_log: Path, tmp_path: Path
) -> None:
    """The Connection holds the IAM user's keys and a role: the hook assumes the role at run time (moto's STS)
    and pinpipe gets that session's keys and token. The user's own keys may not touch S3 at all."""
    user_key, user_secret = signed.user_keys
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        signed.client("s3", aws_access_key_id=user_key, aws_secret_access_key=user_secret).list_objects_v2(
            Bucket=BUCKET
        )
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    _, variables = _deployment(tmp_path, filled_log, "assumed-role")
    conn = _connection(
        signed, user_key, user_secret, role_arn=signed.role_arn, service_config={"sts": {"endpoint_url": signed.url}}
    )
    result, output = airflow_home.run_logged(
        SCHEDULED_RUN,
        timeout=400,
        dag_folder=deployed_dag(tmp_path),
        variables=variables,
        connections={"pinpipe_lake": conn},
    )
    assert result["state"] == "success", output[-4000:]
    assert _gold_tables(signed, "assumed-role") == sorted(GOLD_TABLES)
    assert "(temporary, with a session token)" in output
    _assert_no_secret(output, user_secret)


def test_without_a_connection_the_workers_environment_is_left_alone(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """No Connection ``pinpipe_lake``: the commands get no ``PINPIPE__LAKE__`` credentials, and the worker's own
    ``AWS_*`` variables (an instance role's chain reads them) reach them unchanged."""
    fake = tmp_path / "pinpipe"
    fake.write_text('#!/bin/sh\nenv | grep -E "^(PINPIPE__LAKE__|AWS_)" | sort >> env-$1.txt\n')
    fake.chmod(0o755)
    variables = {
        "pinpipe_executable": str(fake),
        "pinpipe_workdir": str(tmp_path),
        "pinpipe_lake_url": f"s3://{BUCKET}/no-connection",
    }
    result = airflow_home.run(SCHEDULED_RUN, dag_folder=deployed_dag(tmp_path), variables=variables)
    assert result["state"] == "success", result
    seen = (tmp_path / "env-batch.txt").read_text().splitlines()
    assert "PINPIPE__LAKE__URL=s3://signed-lake/no-connection" in seen
    assert not [line for line in seen if line.startswith("PINPIPE__LAKE__") and "URL=" not in line], seen
    assert f"AWS_ACCESS_KEY_ID={airflow_home.env['AWS_ACCESS_KEY_ID']}" in seen
