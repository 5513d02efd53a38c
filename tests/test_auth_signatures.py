"""Signature schemes: Soracom Beam, Soracom Funk, Standard Webhooks and a GitHub-style HMAC.

Each scheme is checked against the test vectors its publisher gives, then refused in
every way a request can go wrong. No broker and no app: verifiers meet ``Credentials``.

Vectors:
- Soracom Beam: developers.soracom.io/en/docs/beam/signature-verification (the
  ``mysecretkey`` example) and soracom-labs/soracom-beam-signature-verifier-example-go
  (soracom/beam_signature_verifier_test.go: cellular, Sigfox, LoRaWAN, Inventory).
- Standard Webhooks: standard-webhooks/standard-webhooks,
  libraries/python/tests/test_webhooks.py (``test_sign_function`` and the multi-signature
  and invalid-signature cases).
- GitHub: docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
  ("Testing the webhook payload validation").
- Soracom Funk publishes no signed example (its key is private): tokens are signed here
  with a test key and carry the claims of users.soracom.io/ja-jp/docs/funk/validate-token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from receiver.auth.base import Credentials, Expiry, Principal, Verifier
from receiver.auth.hmac_signature import HmacAuthSettings, HmacVerifier
from receiver.auth.soracom_beam import SoracomBeamAuthSettings, SoracomBeamVerifier
from receiver.auth.soracom_funk import SoracomFunkAuthSettings, SoracomFunkVerifier
from receiver.auth.standard_webhooks import StandardWebhooksAuthSettings, StandardWebhooksVerifier
from receiver.errors import (
    AuthError,
    ConfigError,
    InvalidSignatureError,
    InvalidTokenError,
    ReplayedRequestError,
    SignatureExpiredError,
    TokenExpiredError,
    TokenNotYetValidError,
    TokenTooOldError,
)
from receiver.state import MemoryState, Once

PAST = "2001-01-01T00:00:00Z"  # a not_after long gone
FUTURE = "2099-01-01T00:00:00Z"


def credentials(headers: Mapping[str, str | None], now: float, body: bytes = b"") -> Credentials:
    """Credentials as the app builds them: lower-case byte names; ``None`` drops a header."""
    raw = {name.lower().encode(): value.encode("latin-1") for name, value in headers.items() if value is not None}
    return Credentials(headers=raw, body=body, now=now)


def refused(verifier: Any, request: Credentials, error: type[AuthError], *hidden: str) -> AuthError:
    """Verify, expect exactly ``error``, and check that no secret or signature leaked into it."""
    with pytest.raises(AuthError) as caught:
        verifier.verify(request)
    assert type(caught.value) is error, caught.value
    for value in hidden:
        assert value not in str(caught.value)
        assert value not in caught.value.message
    return caught.value


def hold(state: MemoryState, verifier: Any, request: Credentials) -> Once:
    """Verify, then reserve the credential's single-use id as the pipeline does."""
    single = verifier.verify(request).single_use
    assert single is not None, "the credential declares no single-use id"
    return asyncio.run(state.reserve(single.id, single, request.now, request.body, fail_open=False))


def replay_refused(state: MemoryState, verifier: Any, request: Credentials) -> None:
    """The signature verifies, but its single-use id was already used for another body."""
    with pytest.raises(ReplayedRequestError):
        hold(state, verifier, request)


def at(instant: str) -> float:
    return datetime.fromisoformat(instant).replace(tzinfo=UTC).timestamp()


# --- Soracom Beam -------------------------------------------------------------------

BEAM_KEY = "mysecretkey"
BEAM_TS = "1445587157992"
BEAM_NOW = int(BEAM_TS) / 1000 + 1
BEAM_SIGNATURE = "95c8e34d68e2bd76502c1e403108dc1bd7008964c31081d0415adb9f21a721a5"
BEAM_HEADERS = {
    "x-soracom-imei": "860000012345678",
    "x-soracom-imsi": "295000012345678",
    "x-soracom-timestamp": BEAM_TS,
    "x-soracom-signature-version": "20151001",
    "x-soracom-signature": BEAM_SIGNATURE,
}
LABS_TS = "1443571200000"  # the example repository's timestamp, with pre-shared key "secret"


def beam(*keys: dict[str, str]) -> SoracomBeamVerifier:
    settings = SoracomBeamAuthSettings.model_validate(
        {"type": "soracom_beam", "keys": list(keys) or [{"value": BEAM_KEY, "id": "beam-2015"}]}
    )
    return SoracomBeamVerifier.from_settings(settings)


def beam_request(changes: Mapping[str, str | None] | None = None, *, now: float = BEAM_NOW) -> Credentials:
    headers = {**BEAM_HEADERS, **(changes or {})}
    return credentials(headers, now, body=b'{"temperature": 21.5}')


def beam_signature(key: str, signed: str) -> str:
    return hashlib.sha256((key + signed).encode()).hexdigest()


@pytest.mark.parametrize(
    ("key", "headers", "name"),
    [
        pytest.param(BEAM_KEY, BEAM_HEADERS, "295000012345678", id="soracom-docs-imei-imsi"),
        pytest.param(
            "secret",
            {
                "x-soracom-imsi": "295100000000001",
                "x-soracom-imei": "012345678901234",
                "x-soracom-signature": "125d84ef000ed210da7a4de94fe601589295370c9e465982c8ddb84dcb7e779e",
            },
            "295100000000001",
            id="labs-cellular-with-imei",
        ),
        pytest.param(
            "secret",
            {
                "x-soracom-imsi": "295100000000001",
                "x-soracom-signature": "a15174afa6e4a4ffa0f9c44e6085e9b6f2b5f0cf2c3437bf46bdd9bf8514f51b",
            },
            "295100000000001",
            id="labs-cellular-without-imei",
        ),
        pytest.param(
            "secret",
            {
                "x-soracom-sigfox-device-id": "FFFFFF",
                "x-soracom-signature": "f9e3364679192f572318101e7fea3186d01c2f751b661735875116463a2db466",
            },
            "FFFFFF",
            id="labs-sigfox",
        ),
        pytest.param(
            "secret",
            {
                "x-soracom-lora-device-id": "0123456789abcdef",
                "x-soracom-signature": "4eed6b68e7ac8093c375ef6d2346e510ccaa08afc8292f5e613271aaa5b13a28",
            },
            "0123456789abcdef",
            id="labs-lorawan",
        ),
        pytest.param(
            "secret",
            {
                "x-device-id": "d-0123456789acbdefghij",
                "x-soracom-signature": "ab59fbf1a5b68cf7d3547342c40f6f170ed5a2d07017d810e3a39ee4a654aa6d",
            },
            "d-0123456789acbdefghij",
            id="labs-inventory",
        ),
    ],
)
def test_beam_published_vectors(key: str, headers: dict[str, str], name: str) -> None:
    """Soracom's documented signatures verify, naming the device and the key's id."""
    defaults = {"x-soracom-timestamp": LABS_TS, "x-soracom-signature-version": "20151001"}
    request = credentials({**defaults, **headers}, now=int(headers.get("x-soracom-timestamp", LABS_TS)) / 1000 + 5)
    principal = beam({"value": key, "id": "psk-1"}).verify(request)
    assert principal == Principal(
        method="soracom_beam", name=name, key_id="psk-1", claims=principal.claims, proven=principal.claims
    )


def test_beam_docs_vector_claims() -> None:
    """The documented example yields its IMSI as the name and every signed header as a claim."""
    principal = beam().verify(beam_request())
    assert principal.name == "295000012345678"
    assert principal.key_id == "beam-2015"
    assert principal.claims == {
        "x-soracom-imei": "860000012345678",
        "x-soracom-imsi": "295000012345678",
        "x-soracom-timestamp": BEAM_TS,
    }


def test_beam_signs_msisdn_and_sim_id_in_documented_order() -> None:
    """IMEI, IMSI, MSISDN, SIM ID, timestamp: the order Soracom documents, whatever the arrival order."""
    signed = (
        "x-soracom-imei=860000012345678x-soracom-imsi=295000012345678"
        f"x-soracom-msisdn=819012345678x-soracom-sim-id=8942310000000000001x-soracom-timestamp={BEAM_TS}"
    )
    request = beam_request(
        {
            "x-soracom-sim-id": "8942310000000000001",
            "x-soracom-msisdn": "819012345678",
            "x-soracom-signature": beam_signature(BEAM_KEY, signed),
        }
    )
    assert beam().verify(request).claims["x-soracom-sim-id"] == "8942310000000000001"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"x-soracom-imsi": "295000012345679"}, InvalidSignatureError, id="tampered-imsi"),
        pytest.param({"x-soracom-imei": "860000012345670"}, InvalidSignatureError, id="tampered-imei"),
        pytest.param({"x-soracom-timestamp": "1445587157993"}, InvalidSignatureError, id="tampered-timestamp"),
        pytest.param({"x-soracom-imei": None}, InvalidSignatureError, id="signed-header-dropped"),
        pytest.param({"x-soracom-msisdn": "819012345678"}, InvalidSignatureError, id="unsigned-header-added"),
        pytest.param({"x-soracom-signature": "0" * 64}, InvalidSignatureError, id="wrong-signature"),
        pytest.param({"x-soracom-signature": None}, InvalidSignatureError, id="missing-signature"),
        pytest.param({"x-soracom-timestamp": None}, InvalidSignatureError, id="missing-timestamp"),
        pytest.param({"x-soracom-signature-version": None}, InvalidSignatureError, id="missing-version"),
        pytest.param({"x-soracom-signature-version": "20141001"}, InvalidSignatureError, id="unsupported-version"),
        pytest.param({"x-soracom-signature": "01234"}, InvalidSignatureError, id="malformed-signature"),
        pytest.param({"x-soracom-timestamp": "yesterday"}, InvalidSignatureError, id="malformed-timestamp"),
        pytest.param({"x-soracom-imei": None, "x-soracom-imsi": None}, InvalidSignatureError, id="no-identity"),
        pytest.param(
            {"x-soracom-imei": "860000012345678x-soracom-imsi=295000012345678", "x-soracom-imsi": None},
            InvalidSignatureError,
            id="label-smuggled-into-value",
        ),
    ],
)
def test_beam_refused(changes: dict[str, str | None], error: type[AuthError]) -> None:
    """Any change to the signed headers, or a missing or malformed one, is refused."""
    refused(beam(), beam_request(changes), error, BEAM_KEY, BEAM_SIGNATURE)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param({"value": "not-my-secret-key", "id": "wrong"}, id="wrong-key"),
        pytest.param({"value": "customer48-beam-key", "id": "customer48"}, id="other-tenant-key"),
    ],
)
def test_beam_other_keys_refused(key: dict[str, str]) -> None:
    """A source holding another pre-shared key refuses the documented request."""
    refused(beam(key), beam_request(), InvalidSignatureError, BEAM_KEY, key["value"], BEAM_SIGNATURE)


@pytest.mark.parametrize(
    ("now", "error"),
    [
        pytest.param(int(BEAM_TS) / 1000 + 300, None, id="oldest-accepted"),
        pytest.param(int(BEAM_TS) / 1000 + 301, SignatureExpiredError, id="expired"),
        pytest.param(int(BEAM_TS) / 1000 - 300, None, id="furthest-future-accepted"),
        pytest.param(int(BEAM_TS) / 1000 - 301, SignatureExpiredError, id="future"),
    ],
)
def test_beam_window(now: float, error: type[AuthError] | None) -> None:
    """x-soracom-timestamp (milliseconds) must lie within the window on either side of now."""
    if error is None:
        assert beam().verify(beam_request(now=now)).name == "295000012345678"
    else:
        refused(beam(), beam_request(now=now), error, BEAM_KEY, BEAM_SIGNATURE)


def test_beam_replay_refused_even_with_another_body() -> None:
    """The signature covers no body, so a signature is accepted once: a replay is refused."""
    verifier, state = beam(), MemoryState()
    once = hold(state, verifier, beam_request())
    once.settle("the first answer")  # the pipeline settles once the event is durable
    again = credentials(BEAM_HEADERS, BEAM_NOW + 10, body=b'{"temperature": 99}')
    replay_refused(state, verifier, again)


def test_replay_is_remembered_only_once_accepted() -> None:
    """A request refused downstream (say, Kafka down: 503) may be retried with the same signature."""
    verifier = beam()
    verifier.verify(beam_request())  # not accepted: the pipeline never called accept()
    assert verifier.verify(beam_request()).name


def test_beam_rotation_skips_expired_key() -> None:
    """A key past its not_after never verifies; the next key in the list still does."""
    verifier = beam(
        {"value": BEAM_KEY, "id": "old", "not_after": PAST},
        {"value": "rotated-beam-key", "id": "new", "not_after": FUTURE},
    )
    refused(verifier, beam_request(), InvalidSignatureError, BEAM_KEY, "rotated-beam-key", BEAM_SIGNATURE)
    signed = f"x-soracom-imei=860000012345678x-soracom-imsi=295000012345678x-soracom-timestamp={BEAM_TS}"
    rotated = beam_request({"x-soracom-signature": beam_signature("rotated-beam-key", signed)})
    assert verifier.verify(rotated).key_id == "new"
    assert list(verifier.expiries()) == [
        Expiry("soracom_beam", "old", at(PAST)),
        Expiry("soracom_beam", "new", at(FUTURE)),
    ]


def test_beam_carries_only_its_headers() -> None:
    """A request carries Beam when it has the signature headers, not just Beam's identity headers."""
    assert beam().carries(beam_request())
    assert not beam().carries(credentials({"x-soracom-imsi": "295000012345678"}, BEAM_NOW))
    assert beam().method == "soracom_beam"
    assert beam().challenge is None


# --- Standard Webhooks -------------------------------------------------------------------

WH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WH_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
WH_TS = 1614265330
WH_BODY = b'{"test": 2432232314}'
WH_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
WH_OTHER_SECRET = "whsec_" + base64.b64encode(b"customer48 endpoint secret 32 by").decode()


def webhooks(*secrets: dict[str, str], tolerance: int = 300) -> StandardWebhooksVerifier:
    settings = StandardWebhooksAuthSettings.model_validate(
        {
            "type": "standard_webhooks",
            "secrets": list(secrets) or [{"value": WH_SECRET, "id": "endpoint-1"}],
            "tolerance_seconds": tolerance,
        }
    )
    return StandardWebhooksVerifier.from_settings(settings)


def webhook_request(
    changes: Mapping[str, str | None] | None = None, *, now: float = WH_TS + 1, body: bytes = WH_BODY
) -> Credentials:
    headers = {"webhook-id": WH_ID, "webhook-timestamp": str(WH_TS), "webhook-signature": WH_SIGNATURE}
    return credentials({**headers, **(changes or {})}, now, body)


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.digest(key, f"{msg_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize(
    ("secret", "signature"),
    [
        pytest.param(WH_SECRET, WH_SIGNATURE, id="reference-vector"),
        pytest.param(WH_SECRET.removeprefix("whsec_"), WH_SIGNATURE, id="secret-without-prefix"),
        pytest.param(
            WH_SECRET,
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
            f"{WH_SIGNATURE} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            id="reference-multi-signature",
        ),
        pytest.param(WH_SECRET, f"v1:abc v1,*** v1,AAAA {WH_SIGNATURE}", id="malformed-entries-beside-a-valid-one"),
    ],
)
def test_webhooks_reference_vectors(secret: str, signature: str) -> None:
    """The reference library's fixed vector verifies, alone or among other signatures."""
    request = webhook_request({"webhook-signature": signature})
    principal = webhooks({"value": secret, "id": "endpoint-1"}).verify(request)
    assert principal == Principal(
        method="standard_webhooks",
        name="endpoint-1",
        key_id="endpoint-1",
        claims={"webhook-id": WH_ID, "webhook-timestamp": WH_TS},
    )


@pytest.mark.parametrize(
    ("body", "changes", "error"),
    [
        pytest.param(b'{"test": 2432232315}', {}, InvalidSignatureError, id="tampered-body"),
        pytest.param(WH_BODY + b" ", {}, InvalidSignatureError, id="body-reserialised"),
        pytest.param(WH_BODY, {"webhook-id": "msg_other"}, InvalidSignatureError, id="tampered-id"),
        pytest.param(WH_BODY, {"webhook-timestamp": str(WH_TS + 1)}, InvalidSignatureError, id="tampered-timestamp"),
        pytest.param(
            WH_BODY,
            {"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="},
            InvalidSignatureError,
            id="reference-invalid-signature",
        ),
        pytest.param(WH_BODY, {"webhook-id": None}, InvalidSignatureError, id="missing-id"),
        pytest.param(WH_BODY, {"webhook-timestamp": None}, InvalidSignatureError, id="missing-timestamp"),
        pytest.param(WH_BODY, {"webhook-signature": None}, InvalidSignatureError, id="missing-signature"),
        pytest.param(WH_BODY, {"webhook-timestamp": "hello"}, InvalidSignatureError, id="malformed-timestamp"),
        pytest.param(WH_BODY, {"webhook-signature": "v1:abc"}, InvalidSignatureError, id="malformed-entry"),
        pytest.param(WH_BODY, {"webhook-signature": "v1,***"}, InvalidSignatureError, id="malformed-base64"),
        pytest.param(WH_BODY, {"webhook-signature": "v1,c2hvcnQ="}, InvalidSignatureError, id="short-signature"),
        pytest.param(
            WH_BODY,
            {"webhook-signature": WH_SIGNATURE.replace("v1,", "v1a,")},
            InvalidSignatureError,
            id="no-v1-entry",
        ),
    ],
)
def test_webhooks_refused(body: bytes, changes: dict[str, str | None], error: type[AuthError]) -> None:
    """A changed body, id or timestamp, or a missing or malformed header, is refused."""
    refused(webhooks(), webhook_request(changes, body=body), error, WH_SECRET, WH_SECRET[6:], WH_SIGNATURE[3:])


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("whsec_" + base64.b64encode(b"a wrong secret of 24 byte").decode(), id="wrong-key"),
        pytest.param(WH_OTHER_SECRET, id="other-tenant-key"),
    ],
)
def test_webhooks_other_keys_refused(secret: str) -> None:
    """An endpoint holding another secret refuses the reference delivery."""
    verifier = webhooks({"value": secret, "id": "other"})
    refused(verifier, webhook_request(), InvalidSignatureError, secret, secret[6:], WH_SIGNATURE[3:])


@pytest.mark.parametrize(
    ("now", "error"),
    [
        pytest.param(WH_TS + 300, None, id="oldest-accepted"),
        pytest.param(WH_TS + 301, SignatureExpiredError, id="expired"),
        pytest.param(WH_TS - 300, None, id="furthest-future-accepted"),
        pytest.param(WH_TS - 301, SignatureExpiredError, id="future"),
    ],
)
def test_webhooks_tolerance(now: float, error: type[AuthError] | None) -> None:
    """webhook-timestamp (seconds) must lie within the tolerance on either side of now."""
    if error is None:
        assert webhooks().verify(webhook_request(now=now)).key_id == "endpoint-1"
    else:
        refused(webhooks(), webhook_request(now=now), error, WH_SECRET, WH_SIGNATURE[3:])


def test_webhooks_replay_refused_until_window_passes() -> None:
    """A webhook-id names one delivery: the same id over another body is refused, the same delivery is a copy.

    A copy is answered with the first one's answer by the pipeline; after the tolerance
    the id starts afresh.
    """
    verifier, state = webhooks(), MemoryState()
    first = hold(state, verifier, webhook_request())
    assert first.first
    first.settle("the first answer")  # the pipeline settles once the event is durable
    copy = hold(state, verifier, webhook_request(now=WH_TS + 5))
    assert not copy.first
    other_body = b'{"type": "forged"}'
    forged = webhook_request(
        {"webhook-signature": webhook_signature(WH_SECRET, WH_ID, WH_TS, other_body)}, now=WH_TS + 5, body=other_body
    )
    replay_refused(state, verifier, forged)
    retry_ts = WH_TS + 301
    retry = webhook_request(
        {
            "webhook-timestamp": str(retry_ts),
            "webhook-signature": webhook_signature(WH_SECRET, WH_ID, retry_ts, WH_BODY),
        },
        now=retry_ts + 1,
    )
    assert hold(state, verifier, retry).first, "past the tolerance the id starts afresh"


def test_webhooks_rotation_skips_expired_secret() -> None:
    """A secret past its not_after never verifies; the next secret in the list still does."""
    verifier = webhooks(
        {"value": WH_SECRET, "id": "old", "not_after": PAST},
        {"value": WH_OTHER_SECRET, "id": "new"},
    )
    refused(verifier, webhook_request(), InvalidSignatureError, WH_SECRET, WH_OTHER_SECRET, WH_SIGNATURE[3:])
    signed = webhook_request({"webhook-signature": webhook_signature(WH_OTHER_SECRET, WH_ID, WH_TS, WH_BODY)})
    assert verifier.verify(signed).key_id == "new"
    assert list(verifier.expiries()) == [Expiry("standard_webhooks", "old", at(PAST))]


def test_webhooks_sender_signing_with_both_secrets_during_rotation() -> None:
    """During a rotation the sender signs with old and new secret; only the live one must match."""
    verifier = webhooks({"value": WH_OTHER_SECRET, "id": "new"})
    both = f"{WH_SIGNATURE} {webhook_signature(WH_OTHER_SECRET, WH_ID, WH_TS, WH_BODY)}"
    assert verifier.verify(webhook_request({"webhook-signature": both})).key_id == "new"


def test_webhooks_secret_not_base64_is_config_error() -> None:
    """A secret that is not whsec_<base64> fails at startup, naming its place but not its value."""
    with pytest.raises(ConfigError) as caught:
        webhooks({"value": "whsec_not base64!", "id": "bad"})
    assert caught.value.problems[0].startswith("secrets.0:")
    assert "not base64!" not in str(caught.value)


def test_webhooks_carries() -> None:
    """Any of the three webhook- headers makes the request a Standard Webhooks one."""
    assert webhooks().carries(credentials({"webhook-id": WH_ID}, WH_TS))
    assert not webhooks().carries(credentials({"x-hub-signature-256": "sha256=00"}, WH_TS))


# --- Generic HMAC (GitHub) ---------------------------------------------------------------

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
GH_BASE64 = "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc="  # the same MAC in base64


def github(*secrets: dict[str, str], **options: str) -> HmacVerifier:
    settings = HmacAuthSettings.model_validate(
        {"type": "hmac", "secrets": list(secrets) or [{"value": GH_SECRET, "id": "gh-hook"}], **options}
    )
    return HmacVerifier.from_settings(settings)


def hub_request(signature: str | None = GH_SIGNATURE, body: bytes = GH_BODY) -> Credentials:
    return credentials({"X-Hub-Signature-256": signature}, 1_700_000_000, body)


def test_hmac_github_vector() -> None:
    """GitHub's documented secret, payload and signature verify; the name is the secret's id."""
    principal = github().verify(hub_request())
    assert principal == Principal(method="hmac", name="gh-hook", key_id="gh-hook")


def test_hmac_base64_in_custom_header() -> None:
    """The same MAC, base64 without a prefix in another header, verifies when so configured."""
    verifier = github(header="X-Signature", prefix="", encoding="base64")
    request = credentials({"x-signature": GH_BASE64}, 1_700_000_000, GH_BODY)
    assert verifier.carries(request)
    assert verifier.verify(request).key_id == "gh-hook"


@pytest.mark.parametrize(
    ("signature", "body"),
    [
        pytest.param(GH_SIGNATURE, b"Hello, World?", id="tampered-body"),
        pytest.param(GH_SIGNATURE, b"", id="empty-body"),
        pytest.param("sha256=" + "0" * 64, GH_BODY, id="wrong-signature"),
        pytest.param(None, GH_BODY, id="missing-header"),
        pytest.param(GH_SIGNATURE.replace("sha256=", "sha1="), GH_BODY, id="wrong-prefix"),
        pytest.param("sha256=not-hex", GH_BODY, id="malformed-hex"),
        pytest.param(GH_SIGNATURE[:-2], GH_BODY, id="truncated"),
    ],
)
def test_hmac_refused(signature: str | None, body: bytes) -> None:
    """Anything but the exact MAC of the exact body is refused."""
    refused(github(), hub_request(signature, body), InvalidSignatureError, GH_SECRET, GH_SIGNATURE[7:])


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("It's a Secret to Everybody!", id="wrong-key"),
        pytest.param("customer48's webhook secret", id="other-tenant-key"),
    ],
)
def test_hmac_other_keys_refused(secret: str) -> None:
    """A source holding another secret refuses GitHub's example."""
    refused(github({"value": secret, "id": "x"}), hub_request(), InvalidSignatureError, secret, GH_SIGNATURE[7:])


def test_hmac_rotation_skips_expired_secret() -> None:
    """A secret past its not_after never verifies; the next secret in the list still does."""
    verifier = github(
        {"value": GH_SECRET, "id": "old", "not_after": PAST},
        {"value": "the new secret", "id": "new", "not_after": FUTURE},
    )
    refused(verifier, hub_request(), InvalidSignatureError, GH_SECRET, "the new secret", GH_SIGNATURE[7:])
    fresh = "sha256=" + hmac.new(b"the new secret", GH_BODY, "sha256").hexdigest()
    assert verifier.verify(hub_request(fresh)).key_id == "new"
    assert [e.key_id for e in verifier.expiries()] == ["old", "new"]


def test_hmac_has_no_replay_refusal() -> None:
    """Without a signed timestamp or id a repeated request cannot be told apart, and passes."""
    verifier = github()
    assert verifier.verify(hub_request()) == verifier.verify(hub_request())


# --- Soracom Funk ---------------------------------------------------------------------

FUNK_KID = "v1-f2fea060b93f510bfb722f0123456789-x509.pem"
FUNK_OTHER_KID = "v1-00000000000000000000000000000000-x509.pem"
FUNK_IAT = 1558673437
FUNK_NOW = FUNK_IAT + 10
FUNK_CLAIMS: dict[str, Any] = {
    "iss": "https://soracom.io",
    "aud": "srn:soracom:OP9012345678:jp:Subscriber:440101234567890",
    "jti": "4i2qn8oqu78",
    "iat": FUNK_IAT,
    "typ": "soracom/token/v1",
    "sub": "funk.soracom.io",
    "ctx": {
        "operatorId": "OP9012345678",
        "resourceType": "Subscriber",
        "resourceId": "440101234567890",
        "sourceProtocol": "udp",
        "srn": "srn:soracom:OP9012345678:jp:Subscriber:440101234567890",
        "imsi": "440101234567890",
        "simId": "44010123456789012345",
        "imei": "123456789012345",
    },
}


@dataclass(frozen=True)
class Signer:
    private_pem: bytes
    public_path: Path

    def token(self, claims: Mapping[str, Any], kid: str | None = FUNK_KID) -> str:
        headers = {} if kid is None else {"kid": kid}
        return jwt.encode(dict(claims), self.private_pem, algorithm="RS256", headers=headers)


def _signer(directory: Path, name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Signer:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = directory / name
    path.write_bytes(public)
    return Signer(private, path)


@pytest.fixture(scope="module")
def funk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("soracom-public-keys")


@pytest.fixture(scope="module")
def soracom(funk_dir: Path) -> Signer:
    """Stands in for Soracom's signing key; the file is named like Soracom's, after its kid."""
    return _signer(funk_dir, FUNK_KID, rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def impostor(funk_dir: Path) -> Signer:
    """Some other RSA key (another tenant's, or an attacker's)."""
    return _signer(funk_dir, "impostor.pem", rsa.generate_private_key(65537, 2048))


def funk(*keys: dict[str, Any], operator_id: str = "OP9012345678") -> SoracomFunkVerifier:
    settings = SoracomFunkAuthSettings.model_validate(
        {"type": "soracom_funk", "public_keys": list(keys), "operator_id": operator_id}
    )
    return SoracomFunkVerifier.from_settings(settings)


def funk_request(token: str | None, now: float = FUNK_NOW, body: bytes = b"\x01\x02") -> Credentials:
    return credentials({"x-soracom-token": token}, now, body)


def claims_with(ctx: Mapping[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """The documented claims with some replaced, ``ctx`` entries merged; ``None`` removes one."""
    merged = {**FUNK_CLAIMS["ctx"], **(ctx or {})}
    result = {**FUNK_CLAIMS, **changes, "ctx": {name: value for name, value in merged.items() if value is not None}}
    return {name: value for name, value in result.items() if value is not None}


def test_funk_documented_token_verifies(soracom: Signer) -> None:
    """A token with Soracom's documented claims verifies; the name is the IMSI, the key id the kid."""
    verifier = funk({"path": str(soracom.public_path)})
    principal = verifier.verify(funk_request(soracom.token(FUNK_CLAIMS)))
    assert (principal.method, principal.name, principal.key_id) == ("soracom_funk", "440101234567890", FUNK_KID)
    assert principal.claims["ctx"]["operatorId"] == "OP9012345678"
    assert verifier.carries(funk_request("x"))
    assert not verifier.carries(funk_request(None))


def test_funk_explicit_kid_and_sigfox_name(soracom: Signer) -> None:
    """A kid may be given in the config; a device without IMSI is named by its resource id."""
    verifier = funk({"path": str(soracom.public_path), "kid": "k-2024"})
    ctx = {
        "operatorId": "OP9012345678",
        "resourceType": "SigfoxDevice",
        "resourceId": "1A2B3C",
        "imsi": None,
        "simId": None,
        "imei": None,
    }
    principal = verifier.verify(funk_request(soracom.token(claims_with(ctx=ctx), kid="k-2024")))
    assert (principal.name, principal.key_id) == ("1A2B3C", "k-2024")


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        pytest.param(claims_with(iss="https://evil.example"), InvalidTokenError, id="wrong-iss"),
        pytest.param(claims_with(sub="soracom-endorse"), InvalidTokenError, id="endorse-token"),
        pytest.param(claims_with(ctx={"operatorId": "OP0000000000"}), InvalidTokenError, id="other-operator"),
        pytest.param(claims_with(ctx={"operatorId": None}), InvalidTokenError, id="no-operator"),
        pytest.param(
            claims_with(operatorId="OP9012345678", ctx={"operatorId": None}),
            InvalidTokenError,
            id="operator-outside-ctx",
        ),
        pytest.param(claims_with(iat=None), InvalidTokenError, id="no-iat"),
        pytest.param(claims_with(iat="yesterday"), InvalidTokenError, id="iat-not-a-number"),
        pytest.param(claims_with(exp=FUNK_NOW - 31), TokenExpiredError, id="expired"),
        pytest.param(claims_with(iat=FUNK_NOW + 31), TokenNotYetValidError, id="iat-in-future"),
        pytest.param(claims_with(nbf=FUNK_NOW + 31), TokenNotYetValidError, id="nbf-in-future"),
    ],
)
def test_funk_claims_refused(soracom: Signer, claims: dict[str, Any], error: type[AuthError]) -> None:
    """A correctly signed token whose claims do not fit this source is refused."""
    token = soracom.token(claims)
    refused(funk({"path": str(soracom.public_path)}), funk_request(token), error, token)


def test_funk_too_old_and_replayed(soracom: Signer) -> None:
    """A token older than max_age is refused and holds nothing; a used jti is refused for another body."""
    verifier = funk({"path": str(soracom.public_path)})
    token = soracom.token(claims_with())
    with pytest.raises(TokenTooOldError):
        verifier.verify(funk_request(token, FUNK_IAT + 301 + 30))
    state = MemoryState()
    once = hold(state, verifier, funk_request(token, FUNK_NOW))
    assert once.first, "the refused attempt did not reserve the jti"
    once.settle("the first answer")
    replay_refused(state, verifier, funk_request(token, FUNK_NOW + 1, body=b'{"other": 1}'))


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(FUNK_IAT + 120 + 30, id="exp-within-leeway"),
        pytest.param(FUNK_IAT - 30, id="iat-within-leeway"),
    ],
)
def test_funk_leeway(soracom: Signer, now: float) -> None:
    """Clock skew up to the leeway is forgiven on both exp and iat."""
    token = soracom.token(claims_with(exp=FUNK_IAT + 120))
    assert funk({"path": str(soracom.public_path)}).verify(funk_request(token, now)).name == "440101234567890"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _forged(header: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(FUNK_CLAIMS).encode())}"
    return f"{signing_input}.{_b64(hmac.digest(key, signing_input.encode(), 'sha256'))}"


def _tampered(soracom: Signer, impostor: Signer) -> str:
    head, _, signature = soracom.token(FUNK_CLAIMS).split(".")
    payload = _b64(json.dumps(claims_with(ctx={"imsi": "440109999999999"})).encode())
    return f"{head}.{payload}.{signature}"


def _alg_none(soracom: Signer, impostor: Signer) -> str:
    payload = soracom.token(FUNK_CLAIMS).split(".")[1]
    return f"{_b64(json.dumps({'alg': 'none', 'kid': FUNK_KID}).encode())}.{payload}."


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda soracom, impostor: impostor.token(FUNK_CLAIMS), id="wrong-key"),
        pytest.param(_tampered, id="tampered-payload"),
        pytest.param(lambda soracom, impostor: soracom.token(FUNK_CLAIMS, kid=FUNK_OTHER_KID), id="unknown-kid"),
        pytest.param(lambda soracom, impostor: soracom.token(FUNK_CLAIMS, kid=None), id="no-kid"),
        pytest.param(
            lambda soracom, impostor: _forged({"alg": "HS256", "kid": FUNK_KID}, soracom.public_path.read_bytes()),
            id="hs256-with-public-key",
        ),
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(lambda soracom, impostor: "not-a-jwt", id="malformed"),
    ],
)
def test_funk_signature_refused(soracom: Signer, impostor: Signer, forge: Callable[[Signer, Signer], str]) -> None:
    """Tokens not signed by the configured key with RS256 are refused, whatever they claim."""
    token = forge(soracom, impostor)
    refused(funk({"path": str(soracom.public_path)}), funk_request(token), InvalidTokenError, token)


def test_funk_missing_header(soracom: Signer) -> None:
    """A request without x-soracom-token is refused as an invalid token."""
    refused(funk({"path": str(soracom.public_path)}), funk_request(None), InvalidTokenError)


def test_funk_other_tenant_key(soracom: Signer, impostor: Signer) -> None:
    """A source configured with another tenant's key under the same kid refuses Soracom's token."""
    verifier = funk({"path": str(impostor.public_path), "kid": FUNK_KID})
    token = soracom.token(FUNK_CLAIMS)
    refused(verifier, funk_request(token), InvalidTokenError, token)


def test_funk_rotation_skips_expired_key(soracom: Signer, impostor: Signer) -> None:
    """A key past its not_after never verifies; a token under the next key's kid still does."""
    verifier = funk(
        {"path": str(soracom.public_path), "not_after": PAST},
        {"path": str(impostor.public_path), "kid": "v2-new", "not_after": FUTURE},
    )
    old = soracom.token(FUNK_CLAIMS)
    refused(verifier, funk_request(old), InvalidTokenError, old)
    assert verifier.verify(funk_request(impostor.token(FUNK_CLAIMS, kid="v2-new"))).key_id == "v2-new"
    assert list(verifier.expiries()) == [
        Expiry("soracom_funk", FUNK_KID, at(PAST)),
        Expiry("soracom_funk", "v2-new", at(FUTURE)),
    ]


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ec-key"),
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), id="short-rsa-key"),  # noqa: S505 (the point)
    ],
)
def test_funk_non_rs256_key_is_config_error(
    funk_dir: Path, make_key: Callable[[], rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]
) -> None:
    """Only RSA keys of 2048 bits or more can verify Funk's RS256 tokens; others fail at startup."""
    signer = _signer(funk_dir, "unfit.pem", make_key())
    with pytest.raises(ConfigError) as caught:
        funk({"path": str(signer.public_path)})
    assert caught.value.problems[0].startswith("public_keys.0:")


def test_every_verifier_is_a_verifier(soracom: Signer) -> None:
    """All four satisfy the Verifier protocol (mypy checks the list), named by their config type."""
    verifiers: list[Verifier] = [beam(), funk({"path": str(soracom.public_path)}), webhooks(), github()]
    assert [v.method for v in verifiers] == ["soracom_beam", "soracom_funk", "standard_webhooks", "hmac"]
    assert all(v.challenge is None for v in verifiers)
