"""Trace context reaches the Kafka record: passed through by default, continued by spans with OTel."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.conftest import BASIC_PASSWORD, SettingsFactory, message_body

URL = "/v1/callbacks/customer47/message"
AUTH = ("iotcomms", BASIC_PASSWORD)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def stored_headers(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        (headers,) = conn.execute("SELECT headers FROM events WHERE topic = 'iot.iotcomms.message'").fetchone()
    return dict(json.loads(headers))


def test_traceparent_is_passed_through(store_client: TestClient, tmp_path: Path) -> None:
    """Without tracing, a valid incoming traceparent is copied to the record unchanged."""
    response = store_client.post(URL, json=message_body(), auth=AUTH, headers={"traceparent": PARENT})
    assert response.status_code == 200
    assert stored_headers(tmp_path / "events.db")["traceparent"] == PARENT


def test_malformed_traceparent_is_dropped(store_client: TestClient, tmp_path: Path) -> None:
    """A traceparent that is not W3C-shaped never reaches consumers."""
    response = store_client.post(URL, json=message_body(), auth=AUTH, headers={"traceparent": "00-zz-1-01"})
    assert response.status_code == 200
    assert "traceparent" not in stored_headers(tmp_path / "events.db")


def test_spans_continue_the_senders_trace(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """With OTel on, a server span and a producer span join the sender's trace; the record carries the latter."""
    exporter = InMemorySpanExporter()
    settings = make_settings(tracing={"enabled": True, "exporter": "none"})
    with TestClient(create_app(settings, span_exporter=exporter)) as client:
        response = client.post(URL, json=message_body(), auth=AUTH, headers={"traceparent": PARENT})
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    (producer,) = [
        s
        for s in spans
        if s.kind == SpanKind.PRODUCER
        and (s.attributes or {}).get("messaging.destination.name") == "iot.iotcomms.message"
    ]
    assert server.name == "POST /v1/callbacks/{source}/{event}"
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert producer.parent is not None
    assert producer.parent.span_id == server.context.span_id
    carried = stored_headers(tmp_path / "events.db")["traceparent"]
    assert carried == f"00-{TRACE_ID}-{format(producer.context.span_id, '016x')}-01"
