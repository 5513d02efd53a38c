"""Who may try at all: source IP allow-lists, trusted proxies, request budgets, failure limits, expiry metric."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from receiver.admission import client_address
from receiver.app import create_app
from receiver.limits import MinuteWindow
from tests.conftest import BASIC_PASSWORD, KeyPair, SettingsFactory, claims, message_body

TOKEN = "static-token-abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"deviceId": "dev-1", "group": "g1"}


def tracker_source(**extra: Any) -> dict[str, Any]:
    tokens = [
        {"sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "id": "live"},
        {"sha256": hashlib.sha256(b"soon").hexdigest(), "id": "soon", "not_after": "2000-01-01T00:00:00Z"},
    ]
    return {"kind": "tracker", "auth": [{"type": "bearer", "tokens": tokens}], **extra}


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    settings = make_settings(
        server={"trusted_proxies": ["10.0.0.0/8"], "failure_limit_per_minute": 3},
        sources={
            "open": tracker_source(),
            "fenced": tracker_source(allowed_ips=["192.0.2.0/24", "2001:db8::/32"]),
            "limited": tracker_source(rate_limit={"requests_per_minute": 2}),
        },
    )
    with TestClient(create_app(settings), client=("10.1.2.3", 5000)) as test_client:
        yield test_client


def test_allow_list_admits_listed_senders(client: TestClient) -> None:
    """Behind a trusted proxy, the forwarded address decides; a listed one is admitted."""
    headers = {**AUTH, "X-Forwarded-For": "192.0.2.7"}
    assert client.post("/v1/push/fenced", json=BODY, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "forwarded",
    [
        pytest.param("198.51.100.1", id="unlisted"),
        pytest.param(None, id="proxy-itself"),
        pytest.param("not-an-ip", id="garbage"),
    ],
)
def test_allow_list_refuses_others(client: TestClient, forwarded: str | None) -> None:
    """An address outside the list gets 403 ip_not_allowed, before any credential is looked at."""
    headers = dict(AUTH) if forwarded is None else {**AUTH, "X-Forwarded-For": forwarded}
    response = client.post("/v1/push/fenced", json=BODY, headers=headers)
    assert response.status_code == 403
    assert response.json()["code"] == "ip_not_allowed"


def test_forwarded_for_from_untrusted_peer_is_ignored(make_settings: SettingsFactory) -> None:
    """A sender that is not a trusted proxy cannot pick its address with X-Forwarded-For."""
    settings = make_settings(
        server={"trusted_proxies": ["10.0.0.0/8"]}, sources={"fenced": tracker_source(allowed_ips=["192.0.2.0/24"])}
    )
    with TestClient(create_app(settings), client=("203.0.113.9", 5000)) as c:
        response = c.post("/v1/push/fenced", json=BODY, headers={**AUTH, "X-Forwarded-For": "192.0.2.7"})
        assert response.json()["code"] == "ip_not_allowed"


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("10.0.0.1", "192.0.2.1, 10.0.0.2", "192.0.2.1", id="two-trusted-hops"),
        pytest.param("10.0.0.1", "6.6.6.6, 192.0.2.1", "192.0.2.1", id="spoofed-leftmost-ignored"),
        pytest.param("203.0.113.1", "192.0.2.1", "203.0.113.1", id="untrusted-peer"),
        pytest.param("10.0.0.1", None, "10.0.0.1", id="no-header"),
        pytest.param("10.0.0.1", "10.0.0.3", "10.0.0.3", id="all-trusted"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    """X-Forwarded-For is read from the right, only as far as trusted proxies reach."""
    assert client_address(peer, forwarded, [ipaddress.ip_network("10.0.0.0/8")]) == expected


def test_source_budget_gives_429_with_headers(client: TestClient) -> None:
    """A limited source reports its budget on every answer; past it, 429 with Retry-After."""
    first = client.post("/v1/push/limited", json=BODY, headers=AUTH)
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert 0 < int(first.headers["X-RateLimit-Reset"]) <= 60
    refused = client.post("/v1/push/limited", json={"group": "g1"}, headers=AUTH)  # invalid, still counted
    assert refused.status_code == 422
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    over = client.post("/v1/push/limited", json=BODY, headers=AUTH)
    assert over.status_code == 429
    assert over.json()["code"] == "rate_limited"
    assert int(over.headers["Retry-After"]) > 0
    assert over.headers["X-RateLimit-Remaining"] == "0"
    other = client.post("/v1/push/open", json=BODY, headers=AUTH)
    assert other.status_code == 200
    assert "X-RateLimit-Limit" not in other.headers


def test_failures_per_address_are_limited(client: TestClient) -> None:
    """Past the allowed failed authentications, a cheap credential is still judged on its merits: 401 or 200."""
    bad = {"Authorization": "Bearer wrong"}
    for _ in range(4):
        assert client.post("/v1/push/open", json=BODY, headers=bad).status_code == 401
    assert client.post("/v1/push/open", json=BODY, headers=AUTH).status_code == 200


def test_a_blocked_address_gets_only_the_cheap_checks(make_settings: SettingsFactory, tenant_key: KeyPair) -> None:
    """Blocked: Basic without a hash and a remembered JWT still pass; an RS256 JWT not seen before gets 429."""
    settings = make_settings(server={"max_body_bytes": 4096, "failure_limit_per_minute": 3})
    url = "/v1/callbacks/customer47/message"
    remembered = {"Authorization": f"Bearer {tenant_key.token(claims())}"}
    with TestClient(create_app(settings)) as client:
        assert client.post(url, json=message_body(), headers=remembered).status_code == 200
        for _ in range(4):
            assert client.post(url, json=message_body(), auth=("iotcomms", "wrong")).status_code == 401
        assert client.post(url, json=message_body(), auth=("iotcomms", BASIC_PASSWORD)).status_code == 200
        assert client.post(url, json=message_body(), headers=remembered).status_code == 200
        fresh = {"Authorization": f"Bearer {tenant_key.token(claims(jti='another'))}"}
        refused = client.post(url, json=message_body(), headers=fresh)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"
    assert "Retry-After" in refused.headers


def test_minute_window_refreshes() -> None:
    """The budget refreshes when the minute window rolls over."""
    window = MinuteWindow(1)
    assert window.take(120.0)[0]
    assert not window.take(150.0)[0]
    allowed, budget = window.take(181.0)
    assert allowed
    assert budget.remaining == 0
    assert budget.reset == 59


def test_expiry_metric_shows_credentials_near_their_end(client: TestClient) -> None:
    """Credentials with a not_after are exported with their remaining seconds and counted when close."""
    text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("receiver_credential_expiry_seconds", (("key_id", "soon"), ("method", "bearer"), ("source", "open")))
    assert samples[key] < 0  # already past: refused, and loudly visible
    assert samples[("receiver_credentials_expiring_soon", (("source", "open"),))] == 1
    assert not any(labels and ("key_id", "live") in labels for _, labels in samples)
