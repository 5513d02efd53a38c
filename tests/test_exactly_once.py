"""Signed request ids, exactly once: concurrent copies publish once, retries are answered like the first."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.events import Record
from receiver.settings import build_settings
from tests.support.publisher import MemoryPublisher

WH_SECRET = "whsec_" + base64.b64encode(b"exactly-once-webhook-secret-32by").decode()
BODY = json.dumps({"deviceId": "d-1", "group": "g"}).encode()


class SlowPublisher(MemoryPublisher):
    """Takes its time to acknowledge, as a broker does: the window in which copies race."""

    async def publish(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0.3)
        await super().publish(records)


def signed(body: bytes = BODY, msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    key = base64.b64decode(WH_SECRET.removeprefix("whsec_"))
    mac = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{mac}",
        "Content-Type": "application/json",
    }


@pytest.fixture
def published() -> SlowPublisher:
    return SlowPublisher()


@pytest.fixture
def client(published: SlowPublisher) -> Iterator[TestClient]:
    source = {"kind": "tracker", "auth": [{"type": "standard_webhooks", "secrets": [{"value": WH_SECRET}]}]}
    settings = build_settings({"audit": {"enabled": False}, "sources": {"wh": source}}, environ=False)
    with TestClient(create_app(settings, publisher=published)) as test_client:
        yield test_client


def test_concurrent_copies_publish_once(client: TestClient, published: SlowPublisher) -> None:
    """Eight simultaneous copies of one signed delivery: one record, eight 200s with its id (was: up to 8 records)."""
    headers = signed()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/push/wh", content=BODY, headers=headers), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["id"] for a in answers}) == 1
    events = [r for r in published.records if r.topic == "iot.tracker.push"]
    assert len(events) == 1


def test_a_retry_of_an_accepted_delivery_is_answered_like_the_first(
    client: TestClient, published: SlowPublisher
) -> None:
    """The sender's retry after a lost answer gets 200 and the same id; nothing is published again (was: 401)."""
    headers = signed()
    first = client.post("/v1/push/wh", content=BODY, headers=headers)
    retry = client.post("/v1/push/wh", content=BODY, headers=headers)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert len(published.records) == 1


def test_the_same_id_over_another_body_is_refused(client: TestClient, published: SlowPublisher) -> None:
    """An id names one delivery: a validly signed other body under a used id is 401 replayed_request."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    assert client.post("/v1/push/wh", content=BODY, headers=signed(msg_id=msg_id)).status_code == 200
    other = json.dumps({"deviceId": "d-2", "group": "g"}).encode()
    answer = client.post("/v1/push/wh", content=other, headers=signed(other, msg_id=msg_id))
    assert answer.status_code == 401
    assert answer.json()["code"] == "replayed_request"
    assert len(published.records) == 1


def test_a_delivery_refused_with_503_is_processed_afresh(client: TestClient, published: SlowPublisher) -> None:
    """While the broker is down the id is not spent: the sender's retry after the outage goes through."""
    headers = signed()
    published.fail()
    assert client.post("/v1/push/wh", content=BODY, headers=headers).status_code == 503
    published.recover()
    retry = client.post("/v1/push/wh", content=BODY, headers=headers)
    assert retry.status_code == 200, retry.text
    assert len(published.records) == 1


def test_a_dead_lettered_delivery_is_answered_alike_and_kept_once(client: TestClient, published: SlowPublisher) -> None:
    """An invalid signed delivery is dead-lettered once; its retry gets the same 422 and writes nothing more."""
    invalid = json.dumps({"group": "g"}).encode()
    headers = signed(invalid)
    first = client.post("/v1/push/wh", content=invalid, headers=headers)
    retry = client.post("/v1/push/wh", content=invalid, headers=headers)
    assert (first.status_code, retry.status_code) == (422, 422)
    assert retry.json() == first.json()
    assert [r.topic for r in published.records] == ["iot.deadletter"]
