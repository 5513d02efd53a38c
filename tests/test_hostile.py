"""Hostile input at the edge: every case gets its 4xx with a JSON body, writes no record, logs no traceback.

The app runs on an in-memory publisher (nothing here is the broker's business) with a
client address a trusted proxy forwards for, so the address rules can be driven too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.intake import query_fields
from receiver.settings import build_settings
from tests.conftest import DOMAIN, KeyPair, claims, message_body
from tests.support.publisher import MemoryPublisher

TOKEN = "hostile-suite-token-0123456789"
HS_SECRET = "hostile-suite-hs512-secret-0123456789abcdef0123456789abcdef-0123456789"
BEAM_KEY = "hostile-suite-beam-psk"
PROXY = "10.0.0.2"
SENDER = "192.0.2.7"


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class World:
    client: TestClient
    published: MemoryPublisher
    key: KeyPair


def make_world(key: KeyPair, **server: Any) -> Iterator[World]:
    static = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    settings = build_settings(
        {
            "server": {"trusted_proxies": [f"{PROXY}/32"], "failure_limit_per_minute": 4, **server},
            "audit": {"enabled": False},
            "sources": {
                "iot": {
                    "kind": "iotcomms",
                    "domain": DOMAIN,
                    "auth": [{"type": "jwt", "public_keys": [str(key.public_path)]}],
                    "rate_limit": {"requests_per_minute": 5},
                },
                "fenced": {"kind": "tracker", "auth": static, "allowed_ips": ["198.51.100.0/24"]},
                "sfx": {"kind": "sigfox", "auth": static, "dedup_window_seconds": 600},
                "sora": {"kind": "soracom", "auth": static, "dedup_window_seconds": 600},
                "trk": {"kind": "tracker", "auth": static},
                "beam": {"kind": "soracom", "auth": [{"type": "soracom_beam", "keys": [{"value": BEAM_KEY}]}]},
                "platform": {
                    "kind": "tracker",
                    "auth": [{"type": "jwt", "secrets": [{"value": HS_SECRET}], "subject": "test_user"}],
                },
            },
        },
        environ=False,
    )
    published = MemoryPublisher()
    with TestClient(create_app(settings, publisher=published), client=(PROXY, 40000)) as client:
        yield World(client, published, key)


@pytest.fixture
def world(tenant_key: KeyPair) -> Iterator[World]:
    yield from make_world(tenant_key)


def iot_token(key: KeyPair) -> str:
    return key.token(claims())


def forged_header_token(header: dict[str, Any]) -> str:
    """A JWT with an arbitrary (unsigned) header and a junk signature."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}.{b64(b'sig')}"


# Each case: its name, the path, the headers, the body, then the status and the code it must get.
HOSTILE = [
    ("alg-list", "/v1/callbacks/iot/message", {"Authorization": "Bearer " + forged_header_token({"alg": ["RS256"]})},
     message_body(), 401, "invalid_token"),
    ("alg-object", "/v1/callbacks/iot/message", {"Authorization": "Bearer " + forged_header_token({"alg": {"a": 1}})},
     message_body(), 401, "invalid_token"),
    ("kid-object", "/v1/callbacks/iot/message",
     {"Authorization": "Bearer " + forged_header_token({"alg": "RS256", "kid": {"x": 1}})},
     message_body(), 401, "invalid_token"),
    ("header-not-json", "/v1/callbacks/iot/message", {"Authorization": "Bearer e30.e30.e30x"}, message_body(),
     401, "invalid_token"),
    ("basic-garbage", "/v1/push/trk", {"Authorization": "Basic %%%"}, {"deviceId": "d", "group": "g"},
     401, "auth_required"),
    ("bearer-empty", "/v1/push/trk", {"Authorization": "Bearer "}, {"deviceId": "d", "group": "g"},
     401, "auth_required"),
    ("nan", "/v1/push/trk", bearer(), b'{"deviceId": "d", "group": "g", "temperature": NaN}', 422, "invalid_payload"),
    ("infinity", "/v1/push/trk", bearer(), b'{"deviceId": "d", "group": "g", "battery": -Infinity}', 422,
     "invalid_payload"),
    ("exponent-past-float", "/v1/push/trk", bearer(), b'{"deviceId": "d", "group": "g", "battery": 1e999}', 422,
     "invalid_payload"),
    ("lone-surrogate", "/v1/push/trk", bearer(), b'{"deviceId": "\\ud800", "group": "g"}', 422, "invalid_payload"),
    ("batch-past-max-items", "/v1/push/trk", bearer(), [{"deviceId": "d", "group": "g"}] * 1001, 413,
     "batch_too_large"),
    ("duplicate-key", "/v1/push/trk", bearer(), b'{"deviceId": "d", "group": "g", "deviceId": "victim"}', 422,
     "invalid_payload"),
    ("sigfox-time-1e20", "/v1/push/sfx/uplink", bearer(), {"device": "1A2B3C", "time": 10**20, "data": "00"}, 422,
     "invalid_payload"),
    ("tracker-time-1e20", "/v1/push/trk", bearer(), {"deviceId": "d", "group": "g", "timestamp": 1e20}, 422,
     "invalid_payload"),
    ("tracker-time-negative", "/v1/push/trk", bearer(), {"deviceId": "d", "group": "g", "timestamp": -1e20}, 422,
     "invalid_payload"),
    ("huge-header", "/v1/push/trk", {**bearer(), "X-Junk": "x" * 20_000}, {"deviceId": "d", "group": "g"}, 431,
     "headers_too_large"),
    ("many-headers", "/v1/push/trk", {**bearer(), **{f"X-H{i}": "1" for i in range(120)}},
     {"deviceId": "d", "group": "g"}, 431, "headers_too_large"),
]  # fmt: skip
DEAD_LETTERED = {
    "nan",
    "infinity",
    "exponent-past-float",
    "lone-surrogate",
    "batch-past-max-items",
    "duplicate-key",
    "sigfox-time-1e20",
    "tracker-time-1e20",
    "tracker-time-negative",
}


@pytest.mark.parametrize(("name", "path", "headers", "body", "status", "code"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_gets_its_4xx(
    world: World,
    caplog: pytest.LogCaptureFixture,
    name: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    code: str,
) -> None:
    """Status, stable code and JSON error body; no event published (a dead letter at most); no traceback."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with caplog.at_level(logging.INFO):
        answer = world.client.post(path, content=content, headers={"Content-Type": "application/json", **headers})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["code"] == code
    assert answer.json()["message"]
    topics = {r.topic for r in world.published.records}
    assert topics == ({"iot.deadletter"} if name in DEAD_LETTERED else set())
    assert not [r for r in caplog.records if r.exc_info], "no traceback for input"


def test_forwarded_for_lines_are_read_together(world: World) -> None:
    """Two X-Forwarded-For lines are one list: the sender's own line cannot hide what the proxy appended (was: 200)."""
    # The sender writes an allowed address; the proxy appends the address it really saw.
    headers = [("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-For", SENDER), *bearer().items()]
    answer = world.client.post("/v1/push/fenced", json={"deviceId": "d", "group": "g"}, headers=headers)
    assert answer.status_code == 403
    assert answer.json()["code"] == "ip_not_allowed"
    inside = [("X-Forwarded-For", SENDER), ("X-Forwarded-For", "198.51.100.9, " + PROXY), *bearer().items()]
    assert world.client.post("/v1/push/fenced", json={"deviceId": "d", "group": "g"}, headers=inside).status_code == 200


def test_rotating_the_first_forwarded_line_does_not_escape_the_failure_limit(world: World) -> None:
    """The failure budget counts the address the proxy saw, whatever the sender writes in front (was: never 429)."""
    codes = []
    for n in range(6):
        headers = [("X-Forwarded-For", f"203.0.113.{uuid.uuid4().int % 250}"), ("X-Forwarded-For", SENDER)]
        if n >= 4:  # an RS256 token never seen: the expensive check a blocked address is refused
            headers.append(("Authorization", f"Bearer {world.key.token(claims(jti=str(uuid.uuid4())))}"))
        answer = world.client.post("/v1/callbacks/iot/message", json=message_body(), headers=headers)
        codes.append(answer.json()["code"])
    assert codes == ["auth_required"] * 4 + ["rate_limited"] * 2


def test_ipv4_mapped_addresses_match_ipv4_allow_lists(world: World) -> None:
    """``::ffff:198.51.100.9`` is 198.51.100.9 for an IPv4 allow-list (was: 403)."""
    headers = {"X-Forwarded-For": "::ffff:198.51.100.9", **bearer()}
    answer = world.client.post("/v1/push/fenced", json={"deviceId": "d", "group": "g"}, headers=headers)
    assert answer.status_code == 200, answer.text


def test_ipv6_failures_count_per_64(world: World) -> None:
    """Rotating the low 64 bits of an IPv6 address does not reset the failure budget (was: per address)."""
    codes = []
    for n in range(1, 7):
        headers = {"X-Forwarded-For": f"2001:db8:1:2::{n:x}"}
        if n > 4:  # an RS256 token never seen: the expensive check a blocked address is refused
            headers["Authorization"] = f"Bearer {world.key.token(claims(jti=str(uuid.uuid4())))}"
        codes.append(
            world.client.post("/v1/callbacks/iot/message", json=message_body(), headers=headers).json()["code"]
        )
    assert codes == ["auth_required"] * 4 + ["rate_limited"] * 2


def test_requests_without_credentials_do_not_spend_the_source_budget(world: World) -> None:
    """Anonymous requests cannot make a valid sender see 429: the budget is charged after authentication."""
    for n in range(5):
        anonymous = world.client.post(
            "/v1/callbacks/iot/message", json=message_body(), headers={"X-Forwarded-For": f"203.0.113.{n}"}
        )
        assert anonymous.status_code == 401
    answer = world.client.post(
        "/v1/callbacks/iot/message", json=message_body(), headers={"Authorization": f"Bearer {iot_token(world.key)}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-RateLimit-Remaining"] == "4"


def test_flood_of_unknown_source_names_is_aggregated(tenant_key: KeyPair) -> None:
    """2,000 random unknown source names give a bounded number of audit records (was: one each)."""
    settings = build_settings(
        {"audit": {"unauthenticated_per_second": 5, "summary_interval_seconds": 3600}, "sources": {}}, environ=False
    )
    published = MemoryPublisher()
    started = time.monotonic()
    with TestClient(create_app(settings, publisher=published)) as client:
        for _ in range(2000):
            assert client.post(f"/v1/push/{uuid.uuid4().hex[:12]}", content=b"{}").status_code == 404
    elapsed = time.monotonic() - started
    entries = [json.loads(line) for r in published.on("iot.audit") for line in r.value.splitlines()]
    individual = [e for e in entries if e.get("type") == "request"]
    summaries = [e for e in entries if e.get("type") == "summary"]
    assert len(individual) <= 5 * (elapsed + 1) + 1
    assert sum(s["count"] for s in summaries) + len(individual) == 2000
    assert {s["source"] for s in summaries} == {"(unknown source)"}


def test_tracker_platform_tokens_pass_the_tracker_defaults(world: World) -> None:
    """The platform's own token (HS512, no iat, a two-day exp) passes a tracker source's jwt defaults (was: 401)."""
    token = jwt.encode(
        {"sub": "test_user", "roles": ["ROLE_DEVICE_WRITE"], "groups": ["g"], "exp": int(time.time()) + 2 * 86400},
        HS_SECRET,
        algorithm="HS512",
    )
    answer = world.client.post(
        "/v1/push/platform", json={"deviceId": "d", "group": "g"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    expired = jwt.encode({"sub": "test_user", "exp": int(time.time()) - 3600}, HS_SECRET, algorithm="HS512")
    refused = world.client.post(
        "/v1/push/platform", json={"deviceId": "d", "group": "g"}, headers={"Authorization": f"Bearer {expired}"}
    )
    assert refused.json()["code"] == "token_expired"


def beam_signed(signed: dict[str, str], unsigned: dict[str, str] | None = None) -> dict[str, str]:
    """Beam's headers: ``signed`` identity headers under a valid signature, plus ``unsigned`` ones beside it."""
    stamp = str(int(time.time() * 1000))
    pairs = "".join(f"{name}={value}" for name, value in sorted(signed.items()))
    signature = hashlib.sha256(f"{BEAM_KEY}{pairs}x-soracom-timestamp={stamp}".encode()).hexdigest()
    return {
        **signed,
        **(unsigned or {}),
        "x-soracom-timestamp": stamp,
        "x-soracom-signature-version": "20151001",
        "x-soracom-signature": signature,
    }


def test_unsigned_identity_headers_count_for_nothing(world: World) -> None:
    """A signed IMEI beside an unsigned X-Device-Id and operator id: the IMEI is the subject (was: d-VICTIM)."""
    headers = beam_signed(
        {"x-soracom-imei": "353000000000001"}, {"X-Device-Id": "d-VICTIM", "x-soracom-operator-id": "OP-FORGED"}
    )
    answer = world.client.post("/v1/push/beam/beam", json={"temp": 21.0}, headers=headers)
    assert answer.status_code == 200, answer.text
    (record,) = world.published.records
    event = json.loads(record.value)
    assert event["subject"] == "353000000000001"
    assert record.key == b"353000000000001"
    identity = event["data"]["raw"]["soracom"]
    assert "deviceId" not in identity
    assert "operatorId" not in identity


def test_inventory_devices_signing_x_soracom_device_id_are_accepted(world: World) -> None:
    """An Inventory device that signs ``x-soracom-device-id`` is accepted under that id (was: 401)."""
    headers = beam_signed({"x-soracom-device-id": "d-0001"})
    answer = world.client.post("/v1/push/beam/beam", json={"temp": 21.0}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert json.loads(world.published.records[0].value)["subject"] == "d-0001"


def test_sigfox_get_callbacks_of_two_devices_are_two_events(world: World) -> None:
    """Two GET callbacks differing only in the device get two ids, both published (was: one id, one lost)."""
    ids = []
    for device in ("3D9F21", "3D9F22", "3D9F21"):
        query = f"device={device}&time=1700000000&data=0a1b"
        answer = world.client.get(f"/v1/push/sfx/uplink?{query}", headers=bearer())
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    assert ids[0] != ids[1], "two devices, two deliveries"
    assert ids[2] == ids[0], "the backend's retry of the same callback keeps its id"
    assert sorted(json.loads(r.value)["subject"] for r in world.published.records) == ["3D9F21", "3D9F22"]


def test_two_sims_sending_the_same_body_are_two_events(world: World) -> None:
    """Beam bodies from two SIMs with the same reading get two ids, both published (was: one id)."""
    ids = [
        world.client.post(
            "/v1/push/sora/beam", json={"temp": 21.0}, headers={**bearer(), "X-Soracom-Imsi": imsi}
        ).json()["id"]
        for imsi in ("440101234567890", "440109876543210")
    ]
    assert ids[0] != ids[1]
    assert len(world.published.records) == 2


@pytest.mark.parametrize("charset", ["rot13", "base64", "zlib", "undefined", "punycode", "hex", "no-such-charset"])
def test_a_charset_that_is_not_a_text_encoding_gets_415(
    world: World, caplog: pytest.LogCaptureFixture, charset: str
) -> None:
    """A ``charset`` naming a codec that is no text encoding gets 415 without a traceback (was: 500, tracebacks)."""
    headers = {"Content-Type": f"application/json; charset={charset}", **bearer()}
    with caplog.at_level(logging.INFO):
        answer = world.client.post("/v1/push/trk", content=b'{"deviceId": "d", "group": "g"}', headers=headers)
    assert answer.status_code == 415, answer.text
    assert answer.json()["code"] == "unsupported_media_type"
    assert not [r for r in caplog.records if r.exc_info]


def test_repeated_query_keys_keep_the_first_value() -> None:
    """A repeated query parameter keeps its first value, as forms and headers do (was: the last)."""
    assert query_fields(b"device=GOOD&device=BAD&x=1") == {"device": "GOOD", "x": "1"}
