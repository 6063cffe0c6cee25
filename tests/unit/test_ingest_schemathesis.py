"""A bounded schemathesis run against the API's own OpenAPI schema, in process: no answer may be a 5xx."""

from __future__ import annotations

import uuid

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from pinpipe.config import load_settings
from pinpipe.ingest.app import create_app
from pinpipe.log.memory import MemoryLog

app = create_app(load_settings({"prefix": "p"}), MemoryLog(f"schemathesis-{uuid.uuid4().hex}"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
