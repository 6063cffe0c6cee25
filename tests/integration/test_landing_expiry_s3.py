"""Landing expiry on an S3 lake (moto): ages by the store's last-modified time, writes its manifests with
conditional puts, deletes through obstore, and accounting over the lake still balances."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from pinpipe.batch.job import run_batch
from pinpipe.checks.accounting import account
from pinpipe.engine import DuckDBEngine
from pinpipe.lake.expiry_manifest import EXPIRED_PREFIX, read_expired
from pinpipe.lake.store import Lake, landed_key
from pinpipe.synth.faults import send_list
from pinpipe.tables import KINDS, topic_name
from tests.fixtures.batch_lake import land
from tests.fixtures.services import Service, moto_lake

pytestmark = pytest.mark.integration
PREFIX = "0affea73130b"


def test_expire_on_s3_keeps_accounting_balanced(moto: Service) -> None:
    url, settings = moto_lake(moto)
    lake = Lake(url, settings)
    sent = send_list(150, 4).by_kind()
    land(lake, sent, per_object=40)
    with DuckDBEngine() as engine:
        run_batch(lake, engine, PREFIX, gold=False)
    env = {
        **os.environ,
        "PINPIPE__LAKE__ENDPOINT": moto.url,
        "PINPIPE__LAKE__ACCESS_KEY_ID": "testing",
        "PINPIPE__LAKE__SECRET_ACCESS_KEY": "testing",
    }

    def expire(*flags: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "pinpipe", "landing", "expire", "--lake", url, "--json", *flags],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        doc: dict[str, object] = orjson.loads(done.stdout)
        return doc

    young = expire("--older-than", "1d")  # the store's last-modified times are seconds old
    assert all(p["objects"] == 0 for p in young["partitions"])  # type: ignore[attr-defined]
    assert not lake.list(EXPIRED_PREFIX)
    doc = expire("--older-than", "0s")
    expired = read_expired(lake)
    for kind in KINDS:
        topic, n = topic_name(PREFIX, kind), len(sent[kind])
        last = (n - 1) // 40 * 40
        assert [o.key for o in lake.list(f"topics/{topic}/")] == [landed_key(topic, 0, last)]  # the newest stays
        assert sum(o.records for o in expired[(topic, 0)]) == last
    assert sum(p["records"] for p in doc["partitions"]) == sum(  # type: ignore[attr-defined]
        (len(v) - 1) // 40 * 40 for v in sent.values()
    )
    report = account(lake, PREFIX)
    assert report.failures() == [], report.findings
    assert {t.topic: t.landed for t in report.topics} == {topic_name(PREFIX, k): len(v) for k, v in sent.items()}
