"""Two receiver processes, one Kafka broker, one Redis: replay, dedup and budgets hold across replicas.

Each test talks to both replicas, as a Service spreading a sender's requests would, and
reads the topic back from the real broker to count what was published.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from argon2 import PasswordHasher

from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker
from tests.support.redis_server import RedisServer
from tests.support.server import Receiver, run_receiver

WH_SECRET = "whsec_" + base64.b64encode(b"replicas-webhooks-secret-32byte!").decode()
TOKEN = "replicas-static-token-5f1e"
WRONG = "not-the-token"
FAILURE_LIMIT = 3
BUDGET = 4


@dataclass
class Replicas:
    a: Receiver
    b: Receiver
    broker: Broker
    redis: RedisServer
    prefix: str

    def topic(self, source: str) -> str:
        return f"{self.prefix}.{source}"

    def published(self, source: str) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in read_topic(self.broker, self.topic(source))]


@pytest.fixture(scope="module")
def replicas(kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two ``receiver serve`` processes with one config: same broker, same Redis (this module's own)."""
    directory = tmp_path_factory.mktemp("replicas")
    prefix = f"r{uuid.uuid4().hex[:10]}"
    (directory / "redis").mkdir()
    redis = RedisServer(workdir=directory / "redis").start()  # its own: the last test kills it
    bearer = {"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}
    webhooks = {"type": "standard_webhooks", "secrets": [{"value": WH_SECRET}]}
    argon2 = {"type": "basic", "username": "fl", "password_hash": PasswordHasher().hash(TOKEN)}

    def source(name: str, auth: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"kind": "tracker", "topic": f"{prefix}.{name}", "auth": [auth], **extra}

    config = {
        "server": {"failure_limit_per_minute": FAILURE_LIMIT, "log_format": "json"},
        "kafka": {
            "bootstrap_servers": kafka_broker.bootstrap_servers,
            "topic_prefix": prefix,
            "topics": {"check": False},
        },
        "audit": {"enabled": False},
        "state": {"url": redis.url, "key_prefix": f"{prefix}:", "timeout_seconds": 0.2},
        "sources": {
            "wh": source("wh", webhooks),
            "whopen": source("whopen", webhooks, single_use_on_state_outage="local"),
            "dd": source("dd", bearer, dedup_window_seconds=600),
            "rl": source("rl", bearer, rate_limit={"requests_per_minute": BUDGET}),
            "fl": source("fl", argon2),
        },
    }
    path = directory / "receiver.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        with (
            run_receiver(path, log=directory / "a.log") as a,
            run_receiver(path, log=directory / "b.log") as b,
        ):
            yield Replicas(a, b, kafka_broker, redis, prefix)
    finally:
        redis.cleanup()


def device_body(marker: str) -> bytes:
    return json.dumps({"deviceId": "dev-1", "group": "g1", "temperature": 21.5, "note": marker}).encode()


def wh_headers(body: bytes, msg_id: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    key = base64.b64decode(WH_SECRET.removeprefix("whsec_"))
    signature = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{signature.decode()}",
    }


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


def basic(password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"fl:{password}".encode()).decode()
    return {"content-type": "application/json", "authorization": f"Basic {credentials}"}


def push(replica: Receiver, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{replica.url}/v1/push/{source}", content=body, headers=headers, timeout=15)


def inside_one_minute() -> None:
    """Budgets are fixed one-minute windows: start a counting test well inside one."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.5)


def test_replay_to_the_other_replica_publishes_nothing(replicas: Replicas) -> None:
    """A captured webhook replayed to the other replica is answered like the first and not published again."""
    body = device_body("replayed")
    msg_id = f"msg_{uuid.uuid4().hex}"
    first = push(replicas.a, "wh", body, wh_headers(body, msg_id))
    assert first.status_code == 200, first.text
    again = push(replicas.b, "wh", body, wh_headers(body, msg_id))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    other = device_body("forged")
    forged = push(replicas.b, "wh", other, wh_headers(other, msg_id))
    assert forged.status_code == 401
    assert forged.json()["code"] == "replayed_request"
    ids = [event["id"] for event in replicas.published("wh")]
    assert ids == [first.json()["id"]]


def test_vendor_retry_across_replicas_is_published_once(replicas: Replicas) -> None:
    """With a dedup window, the same delivery posted to both replicas is published once."""
    body = device_body("retried")
    answers = [push(r, "dd", body, bearer()) for r in (replicas.a, replicas.b, replicas.a)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(replicas.published("dd")) == 1


def test_source_budget_holds_across_replicas(replicas: Replicas) -> None:
    """A source's budget is one for the deployment: spread over two replicas it still allows BUDGET a minute."""
    inside_one_minute()
    statuses = [
        push(replica, "rl", device_body(f"budget-{i}"), bearer()).status_code
        for i, replica in enumerate([replicas.a, replicas.b] * 3)
    ]
    assert statuses == [200] * BUDGET + [429] * (6 - BUDGET)


def test_failure_limit_holds_across_replicas(replicas: Replicas) -> None:
    """Failed authentications on both replicas add up: past the limit both refuse the address its Argon2 checks."""
    inside_one_minute()
    wrong = [push(r, "fl", device_body("x"), basic(WRONG)).status_code for r in (replicas.a, replicas.b, replicas.a)]
    assert wrong == [401] * FAILURE_LIMIT
    time.sleep(0.2)  # the block notice crosses Redis's pub/sub (sub-millisecond on loopback)
    for replica in (replicas.b, replicas.a):
        refused = push(replica, "fl", device_body("good"), basic(TOKEN))
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
    assert replicas.published("fl") == []


def test_a_restarted_redis_does_not_make_replicas_flap(replicas: Replicas) -> None:
    """Redis restarted empty: each replica serves again within about a second, then never refuses a burst."""

    def burst(replica: Receiver, marker: str, n: int = 8) -> list[int]:
        bodies = [device_body(f"{marker}-{i}") for i in range(n)]
        with ThreadPoolExecutor(n) as pool:
            answers = pool.map(lambda b: push(replica, "wh", b, wh_headers(b, f"msg_{uuid.uuid4().hex}")), bodies)
            return [a.status_code for a in answers]

    for replica in (replicas.a, replicas.b):  # several connections in each replica's pool
        assert burst(replica, "warm") == [200] * 8
    replicas.redis.kill()
    refused = {}
    for name, replica in (("a", replicas.a), ("b", replicas.b)):
        body = device_body(f"refused-{name}")
        headers = wh_headers(body, f"msg_{uuid.uuid4().hex}")
        answer = push(replica, "wh", body, headers)
        assert answer.status_code == 503, answer.text
        refused[name] = (replica, body, headers)
    replicas.redis.start()
    back = time.monotonic()
    for name, (replica, body, headers) in refused.items():
        retry = push(replica, "wh", body, headers)
        while retry.status_code == 503 and time.monotonic() - back < 10:
            time.sleep(0.05)
            retry = push(replica, "wh", body, headers)  # the sender's retry of the refused delivery
        took = time.monotonic() - back
        assert retry.status_code == 200, retry.text
        assert took < 1.0, f"replica {name} refused single-use deliveries for {took:.2f} s after Redis came back"
    for round_ in range(3):
        for name, replica in (("a", replicas.a), ("b", replicas.b)):
            statuses = burst(replica, f"after-{round_}")
            assert statuses == [200] * 8, f"replica {name} flapped after Redis came back: {statuses}"


def test_redis_outage_follows_the_policy(replicas: Replicas) -> None:
    """Redis killed: replay-protected sources answer 503 at once, opted-out ones and the rest serve; back after."""
    before = len(replicas.published("wh"))
    replicas.redis.kill()
    body = device_body("during-outage")
    started = time.monotonic()
    refused = push(replicas.a, "wh", body, wh_headers(body, f"msg_{uuid.uuid4().hex}"))
    took = time.monotonic() - started
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "state_unavailable"
    assert "Retry-After" in refused.headers
    assert took < 3.0, f"a dead Redis held the request {took:.2f} s"
    opted = push(replicas.b, "whopen", body, wh_headers(body, f"msg_{uuid.uuid4().hex}"))
    assert opted.status_code == 200, opted.text
    deduped = push(replicas.a, "dd", device_body("outage-dedup"), bearer())
    assert deduped.status_code == 200, deduped.text
    ready = httpx.get(f"{replicas.a.url}/readyz", timeout=5)
    assert ready.status_code == 200, "a shared-state outage must not pull every replica out of the Service"
    assert ready.json()["checks"]["state"].startswith("degraded")
    metrics = httpx.get(f"{replicas.b.url}/metrics", timeout=5).text
    assert 'receiver_state_fallbacks_total{concern="single_use"}' in metrics

    replicas.redis.start()
    deadline = time.monotonic() + 15
    retry = refused
    while time.monotonic() < deadline:
        retry = push(replicas.a, "wh", body, wh_headers(body, f"msg_{uuid.uuid4().hex}"))
        if retry.status_code != 503:
            break
        time.sleep(0.3)
    assert retry.status_code == 200, "after Redis came back, replay-protected sources serve again"
    ids = [event["id"] for event in replicas.published("wh")]
    assert len(ids) == before + 1, "the refused requests were not published; the retry after the outage was"
    assert ids[-1] == retry.json()["id"]
