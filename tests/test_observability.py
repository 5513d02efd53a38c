"""Metrics after traffic, the canonical log line, request ids, and secrets kept out of both."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.logs import JsonFormatter
from tests.conftest import BASIC_PASSWORD, KeyPair, SettingsFactory, claims, hs256_with_public_key, message_body

URL = "/v1/callbacks/customer47/message"
AUTH = ("iotcomms", BASIC_PASSWORD)


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def quiet_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """The embedded-store app without the audit trail, so the store holds only events."""
    with TestClient(create_app(make_settings(audit={"enabled": False}))) as client:
        yield client


def test_metrics_count_the_traffic(quiet_client: TestClient) -> None:
    """Accepted, refused, dead-lettered and unknown-source requests show up with bounded labels."""
    store_client = quiet_client
    for _ in range(3):
        assert store_client.post(URL, json=message_body(), auth=AUTH).status_code == 200
    assert store_client.post(URL, json=message_body(), auth=("iotcomms", "nope")).status_code == 401
    assert store_client.post(URL, json={"to": 1}, auth=AUTH).status_code == 422
    assert store_client.post("/v1/callbacks/device-4711/x", json={}).status_code == 404
    assert store_client.post("/v1/callbacks/customer47/weird-event-1", json={}, auth=AUTH).status_code == 404

    found = samples(store_client)
    req = "receiver_requests_total"
    assert value(found, req, source="customer47", event="message", status="200", code="ok") == 3
    assert value(found, req, source="customer47", event="message", status="401", code="invalid_credentials") == 1
    assert value(found, req, source="customer47", event="message", status="422", code="invalid_payload") == 1
    # Unknown sources and events collapse into one label value: no cardinality from senders.
    assert value(found, req, source="_other", event="_other", status="404", code="unknown_source") == 1
    assert value(found, req, source="customer47", event="_other", status="404", code="unknown_event") == 1
    assert value(found, "receiver_auth_failures_total", source="customer47", reason="invalid_credentials") == 1
    assert value(found, "receiver_events_published_total", topic="iot.iotcomms.message") == 3
    assert value(found, "receiver_deadletters_total", source="customer47", code="invalid_payload") == 1
    assert value(found, "receiver_deadletters_total", source="customer47", code="unknown_event") == 1
    assert value(found, "receiver_store_depth_events") == 5  # 3 events + 2 dead letters
    assert value(found, "receiver_requests_in_flight") == 1  # the scrape itself
    assert value(found, "receiver_request_duration_seconds_count", source="customer47") == 6
    assert value(found, "receiver_publish_duration_seconds_count", publisher="store", outcome="acked") == 5
    assert not any("device-4711" in str(labels) for _, labels in found)


def test_request_id_is_echoed_or_generated(store_client: TestClient) -> None:
    """A sane X-Request-ID is echoed; a missing or hostile one is replaced by a fresh id."""
    given = store_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = store_client.get("/healthz")
    assert len(generated.headers["X-Request-ID"]) == 32
    for hostile in ["x" * 300, "a b c", "<script>"]:
        answered = store_client.get("/healthz", headers={"X-Request-ID": hostile.strip()})
        assert answered.headers["X-Request-ID"] != hostile.strip()


def test_generated_ids_are_a_process_prefix_and_a_counter(store_client: TestClient) -> None:
    """Generated ids share one random per-process prefix and count up: no random syscall per request (was: one)."""
    first, second = (store_client.get("/healthz").headers["X-Request-ID"] for _ in range(2))
    assert first[:16] == second[:16]
    assert int(second[16:], 16) == int(first[16:], 16) + 1


def test_one_log_line_per_request(store_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Each callback yields one ``receiver.request`` record with the fields operators search by."""
    caplog.set_level(logging.INFO, logger="receiver.request")
    response = store_client.post(URL, json=message_body(), auth=AUTH, headers={"X-Request-ID": "req-1"})
    (record,) = [r for r in caplog.records if r.getMessage() == "receiver.request"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-1"
    assert line["source"] == "customer47"
    assert line["event_type"] == "message"
    assert line["status"] == 200
    assert line["code"] == "ok"
    assert line["event_id"] == response.json()["id"]
    assert line["latency_ms"] > 0


def test_secrets_never_reach_logs_or_metrics(
    store_client: TestClient, tenant_key: KeyPair, other_key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens and passwords used in failing and passing requests appear in no log line or metric."""
    caplog.set_level(logging.DEBUG)
    secrets = [
        BASIC_PASSWORD,
        "wrong-password-xyz",
        tenant_key.token(claims()),
        tenant_key.token(claims(iat_offset=-7200)),
        other_key.token(claims()),
        hs256_with_public_key(tenant_key, claims()),
    ]
    store_client.post(URL, json=message_body(), auth=AUTH)
    store_client.post(URL, json=message_body(), auth=("iotcomms", "wrong-password-xyz"))
    for token in secrets[2:]:
        store_client.post(URL, json=message_body(), headers={"Authorization": f"Bearer {token}"})
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    text += store_client.get("/metrics").text
    assert "receiver.request" in text
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[-1] not in text  # not even a JWT's signature part
