"""The API over a real Kafka broker (Tansu) that is stopped mid-run: 503 with Retry-After, never a 2xx."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from pinpipe.config import load_settings
from pinpipe.ingest.app import create_app
from pinpipe.log.kafka import KafkaLog
from tests.fixtures.services import tansu_broker

GEO = {"ind": 1, "timestamp": "2020-08-28 03:52:47", "latitude": 1.0, "longitude": 2.0, "country": "X"}
HEADERS = {"content-type": "application/vnd.kafka.json.v2+json"}


@pytest.mark.integration
def test_kafka_stopped_mid_run(tmp_path: Path) -> None:
    with tansu_broker(tmp_path / "tansu") as broker:
        log = KafkaLog(f"127.0.0.1:{broker.port}", timeout_ms=2000)
        body = orjson.dumps({"records": [{"value": GEO}, {"value": {**GEO, "ind": 2}}]})
        with TestClient(create_app(load_settings(), log)) as client:
            ok = client.post("/topics/0affea73130b.geo", content=body, headers=HEADERS)
            assert ok.status_code == 200
            assert [o["offset"] for o in ok.json()["offsets"]] == [0, 1]
            assert log.end_offset("0affea73130b.geo", 0) == 2
            broker.stop()
            down = client.post("/topics/0affea73130b.geo", content=body, headers=HEADERS)
            assert down.status_code == 503
            assert down.headers["retry-after"] == "1"
            assert down.json()["error_code"] == 50003
            kin = client.put("/streams/streaming-0affea73130b-geo/record", json={"Data": GEO, "PartitionKey": "p"})
            assert kin.status_code == 503 and kin.json()["__type"] == "ServiceUnavailable"
        log.close()
