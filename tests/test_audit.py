"""The audit trail: one record per request, read back from the real broker; flood sampling; no secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from receiver.app import create_app
from receiver.audit import AuditTrail, RequestFacts
from receiver.events import Outcome, Record
from receiver.logs import JsonFormatter
from tests.conftest import (
    BASIC_PASSWORD,
    KeyPair,
    SettingsFactory,
    claims,
    hs256_with_public_key,
    message_body,
)
from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker
from tests.support.ready import ready_client

URL = "/v1/callbacks/customer47/message"


@pytest.mark.kafka
def test_audit_records_match_requests_one_for_one(
    kafka_broker: Broker,
    make_settings: SettingsFactory,
    tenant_key: KeyPair,
    other_key: KeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every request, accepted or refused, yields one audit record on Kafka; no secret in it or in the logs."""
    prefix = f"a{uuid.uuid4().hex[:10]}"
    settings = make_settings(
        kafka={"bootstrap_servers": kafka_broker.bootstrap_servers, "topic_prefix": prefix},
        server={"trusted_proxies": ["10.0.0.0/8"]},
        audit={"flush_interval_seconds": 0.1},
    )
    caplog.set_level(logging.DEBUG)
    good_token = tenant_key.token(claims())
    secrets = [
        good_token,
        BASIC_PASSWORD,
        "wrong-password-1",
        other_key.token(claims()),
        hs256_with_public_key(tenant_key, claims()),
    ]
    requests: list[dict[str, Any]] = [
        {"headers": {"Authorization": f"Bearer {good_token}"}, "json": message_body()},
        {"auth": ("iotcomms", BASIC_PASSWORD), "json": message_body(body="b")},
        {"auth": ("iotcomms", "wrong-password-1"), "json": message_body()},
        {"headers": {"Authorization": f"Bearer {secrets[3]}"}, "json": message_body()},
        {"headers": {"Authorization": f"Bearer {secrets[4]}"}, "json": message_body()},
        {"headers": {"Authorization": f"Bearer {good_token}"}, "json": {"to": 1}},
        {"json": message_body()},
    ]
    with ready_client(create_app(settings), client=("10.9.9.9", 4000)) as client:
        answers = []
        for index, request in enumerate(requests):
            headers = {**request.pop("headers", {}), "X-Request-ID": f"audit-{index}", "X-Forwarded-For": "192.0.2.44"}
            answers.append(client.post(URL, headers=headers, **request))
    # The app has stopped: its shutdown flushed the audit trail.
    records = read_topic(kafka_broker, f"{prefix}.audit")
    assert {dict(r.headers)["content-type"] for r in records} == {b"application/x-ndjson"}
    assert len(records) < len(requests), "entries are packed into few records"
    audit = [json.loads(line) for r in records for line in r.value.splitlines()]
    by_id = {a["request_id"]: a for a in audit if a.get("request_id", "").startswith("audit-")}
    assert sorted(by_id) == [f"audit-{i}" for i in range(len(requests))]
    expected = [
        (200, "ok", "jwt", "customer47.prod-eu-north-1.iotcomms.io"),
        (200, "ok", "basic", "iotcomms"),
        (401, "invalid_credentials", None, None),
        (401, "invalid_token", None, None),
        (401, "invalid_token", None, None),
        (422, "invalid_payload", "jwt", "customer47.prod-eu-north-1.iotcomms.io"),
        (401, "auth_required", None, None),
    ]
    for index, (status, code, method, principal) in enumerate(expected):
        record = by_id[f"audit-{index}"]
        assert answers[index].status_code == status
        assert (record["status"], record["code"], record["auth_method"], record["principal"]) == (
            status,
            code,
            method,
            principal,
        )
        assert record["client_ip"] == "192.0.2.44"
        assert record["source"] == "customer47"
        assert record["method"] == "POST"
        assert record["path"] == URL
        assert record["latency_ms"] >= 0
        assert record["time"].endswith("Z")
    assert by_id["audit-0"]["event_id"] == answers[0].json()["id"]
    # The secrets scan: nothing the suite used appears in audit records or log lines.
    text = json.dumps(audit) + "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[-1] not in text


class ListPublisher:
    """A real in-memory Publisher (the declared interface), to read what the trail wrote."""

    name = "list"

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    async def check(self) -> str | None:
        return None


def test_unauthenticated_flood_is_sampled_and_summarized() -> None:
    """Past the per-second allowance, unauthenticated refusals are counted into one summary record."""
    clock = [1000.0]
    trail = AuditTrail(
        "iot.audit", unauthenticated_per_second=5, summary_interval=10, flush_interval=1, clock=lambda: clock[0]
    )
    for n in range(1000):
        outcome = Outcome(f"r{n}", client_ip=f"198.51.100.{n % 3}", source="customer47", code="invalid_token")
        trail.record(outcome, RequestFacts("POST", "/x", 401, 1.0, clock[0]))
    accepted = Outcome("ok", client_ip="192.0.2.1", source="customer47", principal="p", auth_method="jwt")
    trail.record(accepted, RequestFacts("POST", "/x", 200, 1.0, clock[0]))
    publisher = ListPublisher()
    asyncio.run(trail.flush(publisher))
    entries = [json.loads(line) for r in publisher.records for line in r.value.splitlines()]
    assert len([e for e in entries if e["type"] == "request" and e["code"] == "invalid_token"]) == 5
    assert [e["principal"] for e in entries if e["status"] == 200] == ["p"]  # authenticated: always kept
    clock[0] += 10
    asyncio.run(trail.flush(publisher))
    entries = [json.loads(line) for r in publisher.records for line in r.value.splitlines()]
    (summary,) = [e for e in entries if e["type"] == "summary"]
    assert summary["count"] == 995
    assert summary["code"] == "invalid_token"
    assert {c["client_ip"] for c in summary["top_clients"]} == {"198.51.100.0", "198.51.100.1", "198.51.100.2"}


def test_audit_keeps_records_while_the_publisher_is_down() -> None:
    """A failed write keeps the records for the next flush instead of losing them."""

    class Down(ListPublisher):
        async def publish(self, records: Sequence[Record]) -> None:
            del records
            raise RuntimeError("broker away")

    trail = AuditTrail("t", unauthenticated_per_second=10, summary_interval=60, flush_interval=1)
    trail.record(Outcome("r1", principal="p"), RequestFacts("POST", "/x", 200, 1.0, time.time()))
    asyncio.run(trail.flush(Down()))
    up = ListPublisher()
    asyncio.run(trail.flush(up))
    assert [json.loads(r.value)["request_id"] for r in up.records] == ["r1"]


def test_entries_are_packed_into_records_under_the_size_limit() -> None:
    """Thousands of entries become a few JSON-lines records, each under 256 KiB, none lost or split."""
    trail = AuditTrail("iot.audit", unauthenticated_per_second=10, summary_interval=60, flush_interval=1)
    for n in range(5000):
        trail.record(Outcome(f"r{n}", principal="p", source="customer47"), RequestFacts("POST", "/x", 200, 1.0, 1e9))
    publisher = ListPublisher()
    asyncio.run(trail.flush(publisher))
    assert 1 < len(publisher.records) < 50
    assert all(len(r.value) <= 256 * 1024 for r in publisher.records)
    ids = [json.loads(line)["request_id"] for r in publisher.records for line in r.value.splitlines()]
    assert ids == [f"r{n}" for n in range(5000)]
