"""Never a 5xx on input: property-based tests over credentials and payloads (hypothesis).

Whatever a sender puts in a JWT's header and claims, in any auth header, or in any
vendor's body, the answer is 2xx or 4xx with a JSON body: never a 5xx, never an
unhandled exception. The app publishes into memory; the broker is not the subject here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.settings import build_settings
from receiver.vendors import VENDORS
from tests.conftest import KeyPair
from tests.support.publisher import MemoryPublisher

HS_SECRET = "never-5xx-hs256-secret-0123456789abcdef"
TOKEN = "never-5xx-static-token"
BEAM_KEY = "never-5xx-beam-key"
WH_SECRET = "whsec_" + base64.b64encode(b"never-5xx-webhook-secret-32byte!").decode()
EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# Any text, lone surrogates too (json.dumps escapes them as "\\ud800"), and NaN, Infinity, 1e999.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
any_text = st.text(st.characters() | surrogates, max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.just(1e999) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
claim_names = st.sampled_from(["sub", "iat", "exp", "nbf", "roles", "groups", "jti", "iss", "aud", "scope", "ctx"])
header_names = st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u", "b64", "cty"])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tenant_key: KeyPair) -> Iterator[TestClient]:
    directory = tmp_path_factory.mktemp("never-5xx")
    schema = directory / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["deviceId"]}))
    static = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    every_method = [
        {
            "type": "jwt",
            "algorithms": ["HS256"],
            "secrets": [{"value": HS_SECRET}],
            "subject": "s",
            "require_exp": True,
        },
        {"type": "basic", "username": "u", "password": "p"},
        {"type": "soracom_beam", "keys": [{"value": BEAM_KEY}]},
        {"type": "soracom_funk", "public_keys": [str(tenant_key.public_path)], "operator_id": "OP1"},
        {"type": "standard_webhooks", "secrets": [{"value": WH_SECRET}]},
        {"type": "hmac", "header": "X-Signature", "secrets": [{"value": HS_SECRET}]},
    ]
    extra: dict[str, dict[str, Any]] = {
        "iotcomms": {"domain": "d.example"},
        "generic": {"generic": {"schema_file": str(schema)}},
    }
    sources = {kind: {"kind": kind, "auth": static, **extra.get(kind, {})} for kind in VENDORS}
    sources["every"] = {"kind": "tracker", "auth": every_method}
    sources["rs"] = {
        "kind": "iotcomms",
        "domain": "d.example",
        "auth": [{"type": "jwt", "public_keys": [str(tenant_key.public_path)]}],
    }
    config = build_settings(
        {"server": {"failure_limit_per_minute": 0}, "audit": {"enabled": False}, "sources": sources}, environ=False
    )
    with TestClient(create_app(config, publisher=MemoryPublisher())) as test_client:
        yield test_client


def assert_answered(answer: Any) -> None:
    assert answer.status_code < 500, answer.text
    assert answer.status_code in (200, 202, 204) or answer.json()["code"]


@EXAMPLES
@given(
    header=st.dictionaries(header_names, json_values, max_size=5),
    claims=st.dictionaries(claim_names, json_values, max_size=8),
    sign=st.booleans(),
    hs256=st.booleans(),
)
def test_any_jwt_header_and_claims(
    client: TestClient, header: dict[str, Any], claims: dict[str, Any], sign: bool, hs256: bool
) -> None:
    """A JWT with any header and claims, signed with the source's secret or not, gets 2xx or 4xx."""
    if hs256:
        header["alg"] = "HS256"
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(HS_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest() if sign else b"junk"
    token = f"{signing_input}.{b64url(mac)}"
    for path in ("/v1/push/every", "/v1/callbacks/rs/message"):
        assert_answered(
            client.post(path, json={"deviceId": "d", "group": "g"}, headers={"Authorization": f"Bearer {token}"})
        )


@EXAMPLES
@given(
    name=st.sampled_from(
        [
            "Authorization",
            "x-soracom-signature",
            "x-soracom-signature-version",
            "x-soracom-timestamp",
            "x-soracom-imsi",
            "x-soracom-token",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "X-Signature",
            "X-Forwarded-For",
            "Content-Type",
            "Content-Length-Not",
            "X-Request-ID",
        ]
    ),
    value=header_text,
    scheme=st.sampled_from(["", "Bearer ", "Basic ", "bearer ", "Digest "]),
    body=st.binary(max_size=64),
)
def test_any_auth_header(client: TestClient, name: str, value: str, scheme: str, body: bytes) -> None:
    """Any value in any header a method reads, with any body, gets 2xx or 4xx."""
    headers = {name: (scheme + value) if name == "Authorization" else value}
    assert_answered(client.post("/v1/push/every", content=body, headers=headers))


@EXAMPLES
@given(kind=st.sampled_from(sorted(VENDORS)), event_index=st.integers(0, 20), body=json_values, as_array=st.booleans())
def test_any_payload_for_any_vendor(client: TestClient, kind: str, event_index: int, body: Any, as_array: bool) -> None:
    """Any JSON body (or array of them) to any callback of any vendor, authenticated, gets 2xx or 4xx."""
    events = sorted(VENDORS[kind].events)
    event = events[event_index % len(events)]
    payload = [body, body] if as_array else body
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "X-Soracom-Imsi": "440101234567890",
    }
    assert_answered(client.post(f"/v1/push/{kind}/{event}", content=json.dumps(payload).encode(), headers=headers))


@EXAMPLES
@given(
    body=st.binary(max_size=200),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
            "",
        ]
    ),
    query=st.dictionaries(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8), header_text, max_size=6
    ),
)
def test_any_bytes_form_or_query(client: TestClient, body: bytes, content_type: str, query: dict[str, str]) -> None:
    """Any bytes under any media type, and any query string to a vendor that takes them, get 2xx or 4xx."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    assert_answered(client.post("/v1/push/sigfox/uplink", content=body, headers=headers))
    assert_answered(client.post("/v1/push/tracker", content=body, headers=headers))
    assert_answered(client.get("/v1/push/sigfox/uplink", params=query, headers={"Authorization": f"Bearer {TOKEN}"}))


@EXAMPLES
@given(note=any_text, extra=json_values, batch=st.booleans())
def test_any_text_in_a_valid_message(client: TestClient, note: str, extra: Any, batch: bool) -> None:
    """A message that validates, holding any text (lone surrogates too) or any number, gets 2xx or 4xx."""
    message = {"deviceId": "d", "group": "g", "note": note, "extra": extra}
    payload = [message] if batch else message
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert_answered(client.post("/v1/push/tracker", content=json.dumps(payload).encode(), headers=headers))
