"""Every authentication method against the app and the real broker: valid and every way to be wrong.

One app serves one source per method. Each case posts a request whose body carries a
unique marker, then asserts the status, the error code, and whether a record with that
marker reached the source's topic. Replay cases send the same request twice: the first
must be accepted, the second refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.auth.basic import hash_password
from receiver.settings import build_settings
from tests.conftest import KeyPair, hs256_with_public_key, unsigned_token
from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker
from tests.support.ready import ready_client

pytestmark = pytest.mark.kafka

D1, D2 = "customer47.prod-eu-north-1.iotcomms.io", "customer48.prod-eu-north-1.iotcomms.io"
HS_SECRET = "tracker-hs512-secret-0123456789abcdef0123456789abcdef0123456789abcdef"
HS_OTHER = "another-hs512-secret-0123456789abcdef0123456789abcdef0123456789abcdef"
STATIC_TOKEN = "static-token-for-tok-9f8e7d6c5b4a"
OTHER_TOKEN = "static-token-of-someone-else-1234"
BASIC_PW = "basic-password-for-bas"
BEAM_PSK = "beam-pre-shared-key"
WH_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()
WH_OTHER = "whsec_" + base64.b64encode(b"another-webhooks-secret-32-bytes").decode()
GH_SECRET = "It's a Secret to Everybody"
FUNK_KID = "v1-0123abcd-x509.pem"
OPERATOR = "OP0012345678"
SECRETS = [HS_SECRET, STATIC_TOKEN, BASIC_PW, BEAM_PSK, WH_SECRET, GH_SECRET]


@dataclass
class World:
    """Keys and the running app the cases use."""

    client: TestClient
    broker: Broker
    prefix: str
    iot: KeyPair
    iot2: KeyPair
    funk: KeyPair
    funk_other: KeyPair


@dataclass
class Case:
    """A request (or two, for replays) and what the last one must get."""

    source: str
    build: Callable[[World, str], list[dict[str, Any]]]
    status: int
    code: str
    written: bool = field(default=False)


def _pair(directory: Path, name: str) -> KeyPair:
    key = rsa.generate_private_key(65537, 2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (directory / f"{name}.pem").write_bytes(public)
    return KeyPair(private, public, directory / f"{name}.pem")


@pytest.fixture(scope="module")
def world(kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("matrix")
    iot, iot2, funk, funk_other = (_pair(directory, n) for n in ("iot", "iot2", "funk", "funk_other"))
    prefix = f"m{uuid.uuid4().hex[:10]}"
    tracker = {"kind": "tracker"}
    settings = build_settings(
        {
            "kafka": {
                "bootstrap_servers": kafka_broker.bootstrap_servers,
                "topic_prefix": prefix,
                "topics": {"create": True},
            },
            "server": {"failure_limit_per_minute": 0},
            "sources": {
                "iot": {
                    "kind": "iotcomms",
                    "domain": D1,
                    "auth": [
                        {
                            "type": "jwt",
                            "public_keys": [{"path": str(iot.public_path), "kid": "k1"}],
                            "reject_replayed_jti": True,
                        }
                    ],
                },
                "iot2": {
                    "kind": "iotcomms",
                    "domain": D2,
                    "auth": [{"type": "jwt", "public_keys": [str(iot2.public_path)]}],
                },
                "trk": {
                    **tracker,
                    "require_roles": ["ROLE_DEVICE_WRITE"],
                    "restrict_to_token_groups": True,
                    "auth": [
                        {
                            "type": "jwt",
                            "algorithms": ["HS512"],
                            "secrets": [{"value": HS_SECRET, "id": "hs1"}],
                            "subject": "test_user",
                            "require_iat": False,
                            "max_age_seconds": None,
                            "max_lifetime_seconds": None,
                            "require_exp": True,
                        }
                    ],
                },
                "tok": {
                    **tracker,
                    "auth": [
                        {
                            "type": "bearer",
                            "tokens": [
                                {"sha256": hashlib.sha256(STATIC_TOKEN.encode()).hexdigest(), "id": "current"},
                                {
                                    "sha256": hashlib.sha256(b"retired-token").hexdigest(),
                                    "id": "retired",
                                    "not_after": "2020-01-01T00:00:00Z",
                                },
                            ],
                        }
                    ],
                },
                "tok2": {
                    **tracker,
                    "auth": [
                        {"type": "bearer", "tokens": [{"sha256": hashlib.sha256(OTHER_TOKEN.encode()).hexdigest()}]}
                    ],
                },
                "bas": {
                    **tracker,
                    "auth": [{"type": "basic", "username": "vendor", "password_hash": hash_password(BASIC_PW)}],
                },
                "beam": {**tracker, "auth": [{"type": "soracom_beam", "keys": [{"value": BEAM_PSK, "id": "psk1"}]}]},
                "wh": {**tracker, "auth": [{"type": "standard_webhooks", "secrets": [{"value": WH_SECRET}]}]},
                "gh": {**tracker, "auth": [{"type": "hmac", "secrets": [{"value": GH_SECRET, "id": "gh1"}]}]},
                "funk": {
                    **tracker,
                    "auth": [
                        {
                            "type": "soracom_funk",
                            "public_keys": [{"path": str(funk.public_path), "kid": FUNK_KID}],
                            "operator_id": OPERATOR,
                        }
                    ],
                },
            },
        },
        environ=False,
    )
    with ready_client(create_app(settings)) as client:
        yield World(client, kafka_broker, prefix, iot, iot2, funk, funk_other)


# --- request builders -----------------------------------------------------------------


def now() -> int:
    return int(time.time())


def iot_body(marker: str) -> bytes:
    body = {"from": "sip:a@x", "to": "sip:b@y", "contentType": "text/plain", "body": marker, "replyId": marker}
    return json.dumps(body).encode()


def device_body(marker: str, group: str = "myGroup1") -> bytes:
    return json.dumps({"deviceId": "dev-1", "group": group, "temperature": 21.5, "note": marker}).encode()


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"url": path, "content": body, "headers": {"Content-Type": "application/json", **(headers or {})}}


def iot_claims(**overrides: Any) -> dict[str, Any]:
    return {"sub": D1, "iat": now(), "exp": now() + 300, "jti": uuid.uuid4().hex, **overrides}


def iot_call(token: str | None, marker: str, source: str = "iot") -> dict[str, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return post(f"/v1/callbacks/{source}/message", iot_body(marker), headers)


def trk_token(secret: str = HS_SECRET, alg: str = "HS512", **overrides: Any) -> str:
    claims = {
        "sub": "test_user",
        "roles": ["ROLE_DEVICE_READ", "ROLE_DEVICE_WRITE"],
        "groups": ["myGroup1", "myGroup2"],
        "exp": now() + 3600,
        **overrides,
    }
    return jwt.encode(claims, secret, algorithm=alg)


def push(source: str, body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return post(f"/v1/push/{source}", body, headers)


def basic_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def beam_headers(psk: str = BEAM_PSK, imsi: str = "440101234567890", ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time() * 1000) if ts is None else ts)
    signed = f"{psk}x-soracom-imei=353000000000001x-soracom-imsi={imsi}x-soracom-timestamp={stamp}"
    return {
        "X-Soracom-Imei": "353000000000001",
        "X-Soracom-Imsi": imsi,
        "X-Soracom-Timestamp": stamp,
        "X-Soracom-Signature-Version": "20151001",
        "X-Soracom-Signature": hashlib.sha256(signed.encode()).hexdigest(),
    }


def wh_headers(
    body: bytes, secret: str = WH_SECRET, msg_id: str | None = None, ts: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(now() if ts is None else ts)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signature = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{signature.decode()}"}


def gh_headers(body: bytes, secret: str = GH_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


def funk_token(key: KeyPair, kid: str = FUNK_KID, alg: str = "RS256", **overrides: Any) -> str:
    claims = {
        "iss": "https://soracom.io",
        "sub": "funk.soracom.io",
        "iat": now(),
        "jti": uuid.uuid4().hex,
        "ctx": {"operatorId": OPERATOR, "imsi": "440101234567890", "resourceType": "Subscriber"},
        **overrides,
    }
    return jwt.encode(claims, key.private_pem, algorithm=alg, headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def swap_claims(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


# --- the cases ----------------------------------------------------------------------------

WIDER_CLAIMS = {"sub": "test_user", "roles": ["ROLE_DEVICE_WRITE"], "groups": ["myGroup1", "all"]}

One = Callable[[World, str], dict[str, Any]]


def once(build: One) -> Callable[[World, str], list[dict[str, Any]]]:
    return lambda w, m: [build(w, m)]


def twice(build: One) -> Callable[[World, str], list[dict[str, Any]]]:
    """The same request twice: a replay."""
    return lambda w, m: [build(w, m)] * 2


def _wh_tampered_header(w: World, m: str) -> dict[str, Any]:
    body = device_body(m)
    headers = wh_headers(body)
    headers["webhook-id"] = "msg_other"
    return push("wh", body, headers)


def _wh_tampered_body(w: World, m: str) -> dict[str, Any]:
    headers = wh_headers(device_body(m))
    return push("wh", device_body(m, group="myGroup2"), headers)


def _gh_tampered_body(w: World, m: str) -> dict[str, Any]:
    return push("gh", device_body(m, group="other"), gh_headers(device_body(m)))


def _beam_tampered_header(w: World, m: str) -> dict[str, Any]:
    headers = beam_headers()
    headers["X-Soracom-Imsi"] = "440109999999999"
    return push("beam", device_body(m), headers)


VALID: dict[str, One] = {
    "iot": lambda w, m: iot_call(w.iot.token(iot_claims(), headers={"kid": "k1"}), m),
    "trk": lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token()}"}),
    "tok": lambda w, m: push("tok", device_body(m), {"Authorization": f"Bearer {STATIC_TOKEN}"}),
    "bas": lambda w, m: push("bas", device_body(m), basic_header("vendor", BASIC_PW)),
    "beam": lambda w, m: push("beam", device_body(m), beam_headers()),
    "wh": lambda w, m: push("wh", device_body(m), wh_headers(device_body(m))),
    "gh": lambda w, m: push("gh", device_body(m), gh_headers(device_body(m))),
    "funk": lambda w, m: push("funk", device_body(m), {"x-soracom-token": funk_token(w.funk)}),
}


def valid(source: str) -> Case:
    """The accepted case of a method: its valid request, published."""
    return Case(source, once(VALID[source]), 200, "ok", True)


CASES = [
    # JWT, RS256 with kid and jti replay refusal (iotcomms)
    pytest.param(valid("iot"), id="jwt-valid"),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token(iot_claims(iat=now() - 900, exp=now() - 60)), m)),
            401,
            "token_expired",
        ),
        id="jwt-expired",
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token(iot_claims(iat=now() + 600, exp=now() + 900)), m)),
            401,
            "token_not_yet_valid",
        ),
        id="jwt-not-yet-valid",
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token(iot_claims(iat=now() - 3700, exp=None)), m)),
            401,
            "token_too_old",
        ),
        id="jwt-too-old",
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token(iot_claims(exp=now() + 6000)), m)),
            401,
            "token_lifetime_exceeded",
        ),
        id="jwt-lifetime",
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token(iot_claims()), m) | {"content": iot_body(m + "-tampered")}),
            200,
            "ok",
            True,
        ),
        id="jwt-tampered-body-unsigned-accepted",
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(swap_claims(w.iot.token(iot_claims()), iot_claims(exp=now() + 900)), m)),
            401,
            "invalid_token",
        ),
        id="jwt-tampered-claims",
    ),
    pytest.param(
        Case("iot", once(lambda w, m: iot_call(w.iot2.token(iot_claims()), m)), 401, "invalid_token"),
        id="jwt-wrong-key",
    ),
    pytest.param(
        Case("iot", once(lambda w, m: iot_call(w.iot2.token(iot_claims(sub=D2)), m)), 401, "invalid_token"),
        id="jwt-other-tenants-token",
    ),
    pytest.param(
        Case("iot2", once(lambda w, m: iot_call(w.iot2.token(iot_claims()), m, "iot2")), 401, "subject_mismatch"),
        id="jwt-sub-of-other-tenant",
    ),
    pytest.param(
        Case("iot", once(lambda w, m: iot_call(hs256_with_public_key(w.iot, iot_claims()), m)), 401, "invalid_token"),
        id="jwt-alg-confusion-hs256",
    ),
    pytest.param(
        Case("iot", once(lambda w, m: iot_call(unsigned_token(iot_claims()), m)), 401, "invalid_token"),
        id="jwt-alg-none",
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token(iot_claims(), headers={"kid": "k9"}), m)),
            401,
            "invalid_token",
        ),
        id="jwt-unknown-kid",
    ),
    pytest.param(Case("iot", once(lambda w, m: iot_call(None, m)), 401, "auth_required"), id="jwt-missing-header"),
    pytest.param(
        Case("iot", once(lambda w, m: iot_call("not.a.jwt", m)), 401, "invalid_token"), id="jwt-malformed-header"
    ),
    pytest.param(
        Case(
            "iot",
            once(lambda w, m: iot_call(w.iot.token({k: v for k, v in iot_claims().items() if k != "jti"}), m)),
            401,
            "invalid_token",
        ),
        id="jwt-missing-jti",
    ),
    pytest.param(
        Case(
            "iot",
            (lambda w, m: [iot_call(t := w.iot.token(iot_claims()), m), iot_call(t, m + "-again")]),
            401,
            "replayed_request",
        ),
        id="jwt-replayed-jti",
    ),
    # JWT, HS512 with roles and groups (the tracker platform)
    pytest.param(valid("trk"), id="hs512-valid"),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token(exp=now() - 60)}"})),
            401,
            "token_expired",
        ),
        id="hs512-expired",
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token(nbf=now() + 600)}"})),
            401,
            "token_not_yet_valid",
        ),
        id="hs512-not-yet-valid",
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token(exp=None)}"})),
            401,
            "invalid_token",
        ),
        id="hs512-no-exp",
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m, group="notMine"), {"Authorization": f"Bearer {trk_token()}"})),
            403,
            "forbidden",
        ),
        id="hs512-tampered-body-other-group",
    ),
    pytest.param(
        Case(
            "trk",
            once(
                lambda w, m: push(
                    "trk",
                    device_body(m),
                    {"Authorization": f"Bearer {swap_claims(trk_token(), WIDER_CLAIMS | {'exp': now() + 60})}"},
                )
            ),
            401,
            "invalid_token",
        ),
        id="hs512-tampered-claims",
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token(HS_OTHER)}"})),
            401,
            "invalid_token",
        ),
        id="hs512-wrong-key",
    ),
    pytest.param(
        Case(
            "trk",
            once(
                lambda w, m: push(
                    "trk",
                    device_body(m),
                    {"Authorization": f"Bearer {w.iot.token({'sub': 'test_user', 'exp': now() + 60})}"},
                )
            ),
            401,
            "invalid_token",
        ),
        id="hs512-other-tenants-rsa-key",
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token(alg='HS256')}"})),
            401,
            "invalid_token",
        ),
        id="hs512-alg-downgrade-hs256",
    ),
    pytest.param(
        Case(
            "trk",
            once(
                lambda w, m: push(
                    "trk",
                    device_body(m),
                    {"Authorization": f"Bearer {unsigned_token({'sub': 'test_user', 'exp': now() + 60})}"},
                )
            ),
            401,
            "invalid_token",
        ),
        id="hs512-alg-none",
    ),
    pytest.param(
        Case(
            "trk",
            once(
                lambda w, m: push(
                    "trk", device_body(m), {"Authorization": f"Bearer {trk_token(roles=['ROLE_DEVICE_READ'])}"}
                )
            ),
            403,
            "forbidden",
        ),
        id="hs512-missing-role",
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": f"Bearer {trk_token(groups=None)}"})),
            403,
            "forbidden",
        ),
        id="hs512-no-groups-claim",
    ),
    pytest.param(
        Case("trk", once(lambda w, m: push("trk", device_body(m))), 401, "auth_required"), id="hs512-missing-header"
    ),
    pytest.param(
        Case(
            "trk",
            once(lambda w, m: push("trk", device_body(m), {"Authorization": "Bearer a.b.c"})),
            401,
            "invalid_token",
        ),
        id="hs512-malformed-header",
    ),
    # static bearer tokens
    pytest.param(valid("tok"), id="bearer-valid"),
    pytest.param(
        Case(
            "tok",
            once(lambda w, m: push("tok", device_body(m), {"Authorization": "Bearer retired-token"})),
            401,
            "invalid_credentials",
        ),
        id="bearer-expired-token",
    ),
    pytest.param(
        Case(
            "tok",
            once(lambda w, m: push("tok", device_body(m), {"Authorization": f"Bearer {STATIC_TOKEN}x"})),
            401,
            "invalid_credentials",
        ),
        id="bearer-wrong-token",
    ),
    pytest.param(
        Case(
            "tok",
            once(lambda w, m: push("tok", device_body(m), {"Authorization": f"Bearer {OTHER_TOKEN}"})),
            401,
            "invalid_credentials",
        ),
        id="bearer-other-tenants-token",
    ),
    pytest.param(
        Case(
            "tok",
            once(lambda w, m: push("tok", device_body(m), basic_header("vendor", STATIC_TOKEN))),
            401,
            "auth_required",
        ),
        id="bearer-wrong-scheme",
    ),
    pytest.param(
        Case("tok", once(lambda w, m: push("tok", device_body(m))), 401, "auth_required"), id="bearer-missing-header"
    ),
    pytest.param(
        Case("tok", once(lambda w, m: push("tok", device_body(m), {"Authorization": "Bearer"})), 401, "auth_required"),
        id="bearer-malformed-header",
    ),
    pytest.param(
        Case(
            "tok",
            once(
                lambda w, m: (
                    push("tok", device_body(m), {"Authorization": f"Bearer {STATIC_TOKEN}"})
                    | {"content": device_body(m + "-t")}
                )
            ),
            200,
            "ok",
            True,
        ),
        id="bearer-tampered-body-unsigned-accepted",
    ),
    # Basic with an Argon2 hash
    pytest.param(valid("bas"), id="basic-valid"),
    pytest.param(
        Case(
            "bas",
            once(lambda w, m: push("bas", device_body(m), basic_header("vendor", BASIC_PW + "x"))),
            401,
            "invalid_credentials",
        ),
        id="basic-wrong-password",
    ),
    pytest.param(
        Case(
            "bas",
            once(lambda w, m: push("bas", device_body(m), basic_header("other", BASIC_PW))),
            401,
            "invalid_credentials",
        ),
        id="basic-wrong-user",
    ),
    pytest.param(
        Case(
            "bas",
            once(lambda w, m: push("bas", device_body(m), {"Authorization": "Basic !!!"})),
            401,
            "invalid_credentials",
        ),
        id="basic-malformed-header",
    ),
    pytest.param(
        Case("bas", once(lambda w, m: push("bas", device_body(m))), 401, "auth_required"), id="basic-missing-header"
    ),
    pytest.param(
        Case(
            "bas",
            once(lambda w, m: push("bas", device_body(m), {"Authorization": f"Bearer {STATIC_TOKEN}"})),
            401,
            "auth_required",
        ),
        id="basic-other-tenants-token",
    ),
    # Soracom Beam
    pytest.param(valid("beam"), id="beam-valid"),
    pytest.param(Case("beam", once(_beam_tampered_header), 401, "invalid_signature"), id="beam-tampered-header"),
    pytest.param(
        Case(
            "beam",
            once(lambda w, m: push("beam", device_body(m), beam_headers(psk="wrong-psk"))),
            401,
            "invalid_signature",
        ),
        id="beam-wrong-key",
    ),
    pytest.param(
        Case(
            "beam",
            once(lambda w, m: push("beam", device_body(m), beam_headers(ts=(now() - 900) * 1000))),
            401,
            "signature_expired",
        ),
        id="beam-expired",
    ),
    pytest.param(
        Case(
            "beam",
            once(lambda w, m: push("beam", device_body(m), beam_headers(ts=(now() + 900) * 1000))),
            401,
            "signature_expired",
        ),
        id="beam-not-yet-valid",
    ),
    pytest.param(
        Case(
            "beam",
            once(lambda w, m: push("beam", device_body(m), beam_headers() | {"X-Soracom-Signature": "zz"})),
            401,
            "invalid_signature",
        ),
        id="beam-malformed-header",
    ),
    pytest.param(
        Case("beam", once(lambda w, m: push("beam", device_body(m))), 401, "auth_required"), id="beam-missing-header"
    ),
    pytest.param(
        # The same signed delivery again: answered like the first, published once (the matrix checks it).
        Case("beam", twice(lambda w, m: push("beam", device_body(m), beam_headers())), 200, "ok"),
        id="beam-replayed",
    ),
    # Standard Webhooks
    pytest.param(valid("wh"), id="webhooks-valid"),
    pytest.param(Case("wh", once(_wh_tampered_body), 401, "invalid_signature"), id="webhooks-tampered-body"),
    pytest.param(Case("wh", once(_wh_tampered_header), 401, "invalid_signature"), id="webhooks-tampered-header"),
    pytest.param(
        Case(
            "wh",
            once(lambda w, m: push("wh", device_body(m), wh_headers(device_body(m), secret=WH_OTHER))),
            401,
            "invalid_signature",
        ),
        id="webhooks-wrong-key",
    ),
    pytest.param(
        Case(
            "wh",
            once(lambda w, m: push("wh", device_body(m), wh_headers(device_body(m), ts=now() - 900))),
            401,
            "signature_expired",
        ),
        id="webhooks-expired",
    ),
    pytest.param(
        Case(
            "wh",
            once(lambda w, m: push("wh", device_body(m), wh_headers(device_body(m), ts=now() + 900))),
            401,
            "signature_expired",
        ),
        id="webhooks-not-yet-valid",
    ),
    pytest.param(
        Case(
            "wh",
            once(lambda w, m: push("wh", device_body(m), wh_headers(device_body(m)) | {"webhook-signature": "v1"})),
            401,
            "invalid_signature",
        ),
        id="webhooks-malformed-header",
    ),
    pytest.param(
        Case("wh", once(lambda w, m: push("wh", device_body(m))), 401, "auth_required"), id="webhooks-missing-header"
    ),
    pytest.param(
        Case(
            "wh",
            (lambda w, m: [push("wh", device_body(m), wh_headers(device_body(m)))] * 2),
            200,  # the same delivery again: answered like the first, published once
            "ok",
        ),
        id="webhooks-replayed",
    ),
    # GitHub-style HMAC over the body
    pytest.param(valid("gh"), id="hmac-valid"),
    pytest.param(Case("gh", once(_gh_tampered_body), 401, "invalid_signature"), id="hmac-tampered-body"),
    pytest.param(
        Case(
            "gh",
            once(lambda w, m: push("gh", device_body(m), gh_headers(device_body(m), secret="wrong"))),
            401,
            "invalid_signature",
        ),
        id="hmac-wrong-key",
    ),
    pytest.param(
        Case(
            "gh",
            once(
                lambda w, m: push(
                    "gh",
                    device_body(m),
                    {"X-Hub-Signature-256": hmac.new(GH_SECRET.encode(), device_body(m), hashlib.sha256).hexdigest()},
                )
            ),
            401,
            "invalid_signature",
        ),
        id="hmac-malformed-header",
    ),
    pytest.param(
        Case("gh", once(lambda w, m: push("gh", device_body(m))), 401, "auth_required"), id="hmac-missing-header"
    ),
    pytest.param(
        Case("gh", once(lambda w, m: push("gh", device_body(m), wh_headers(device_body(m)))), 401, "auth_required"),
        id="hmac-other-method-headers",
    ),
    # Soracom Funk
    pytest.param(valid("funk"), id="funk-valid"),
    pytest.param(
        Case(
            "funk",
            once(lambda w, m: push("funk", device_body(m), {"x-soracom-token": funk_token(w.funk_other)})),
            401,
            "invalid_token",
        ),
        id="funk-wrong-key",
    ),
    pytest.param(
        Case(
            "funk",
            once(
                lambda w, m: push(
                    "funk", device_body(m), {"x-soracom-token": funk_token(w.funk, kid="v1-unknown-x509.pem")}
                )
            ),
            401,
            "invalid_token",
        ),
        id="funk-unknown-kid",
    ),
    pytest.param(
        Case(
            "funk",
            once(lambda w, m: push("funk", device_body(m), {"x-soracom-token": funk_token(w.funk, exp=now() - 120)})),
            401,
            "token_expired",
        ),
        id="funk-expired",
    ),
    pytest.param(
        Case(
            "funk",
            once(lambda w, m: push("funk", device_body(m), {"x-soracom-token": funk_token(w.funk, iat=now() + 900)})),
            401,
            "token_not_yet_valid",
        ),
        id="funk-not-yet-valid",
    ),
    pytest.param(
        Case(
            "funk",
            once(
                lambda w, m: push(
                    "funk", device_body(m), {"x-soracom-token": funk_token(w.funk, ctx={"operatorId": "OP9999999999"})}
                )
            ),
            401,
            "invalid_token",
        ),
        id="funk-other-operator",
    ),
    pytest.param(
        Case(
            "funk",
            once(
                lambda w, m: push(
                    "funk",
                    device_body(m),
                    {
                        "x-soracom-token": swap_claims(
                            funk_token(w.funk),
                            {
                                "iss": "https://soracom.io",
                                "sub": "funk.soracom.io",
                                "iat": now(),
                                "ctx": {"operatorId": OPERATOR, "imsi": "1"},
                            },
                        )
                    },
                )
            ),
            401,
            "invalid_token",
        ),
        id="funk-tampered-claims",
    ),
    pytest.param(
        Case(
            "funk",
            once(
                lambda w, m: push(
                    "funk",
                    device_body(m),
                    {"x-soracom-token": hs256_with_public_key(w.funk, {"iss": "https://soracom.io"})},
                )
            ),
            401,
            "invalid_token",
        ),
        id="funk-alg-confusion",
    ),
    pytest.param(
        Case(
            "funk",
            once(lambda w, m: push("funk", device_body(m), {"x-soracom-token": "garbage"})),
            401,
            "invalid_token",
        ),
        id="funk-malformed-header",
    ),
    pytest.param(
        Case("funk", once(lambda w, m: push("funk", device_body(m))), 401, "auth_required"), id="funk-missing-header"
    ),
]


def topic_of(world: World, source: str) -> str:
    kind = "iotcomms" if source.startswith("iot") else "tracker"
    event = "message" if kind == "iotcomms" else "push"
    return f"{world.prefix}.{kind}.{event}"


@pytest.mark.parametrize("case", CASES)
def test_method_matrix(world: World, case: Case) -> None:
    """Status, stable code, and whether the event reached Kafka, for one method and one way to be wrong."""
    marker = uuid.uuid4().hex
    requests = case.build(world, marker)
    for earlier in requests[:-1]:
        response = world.client.post(**earlier)
        assert response.status_code == 200, response.text
    response = world.client.post(**requests[-1])
    assert response.status_code == case.status, response.text
    if case.status != 200:
        body = response.json()
        assert body["code"] == case.code
        for secret in SECRETS:
            assert secret not in response.text
    values = [r.value.decode() for r in read_topic(world.broker, topic_of(world, case.source))]
    written = [v for v in values if marker in v]
    if case.written:
        assert written, f"no record with marker {marker}"
    elif len(requests) == 1:
        assert written == [], "a refused request reached Kafka"
    else:
        assert len(written) == 1, "the replay was published a second time"


TRACKER_SOURCES = ["trk", "tok", "bas", "beam", "wh", "gh", "funk"]


@pytest.mark.parametrize("owner", sorted(VALID))
def test_credentials_never_open_another_source(world: World, owner: str) -> None:
    """A request valid for one source, sent to every other source's URL, is refused there and not published."""
    for target in [s for s in TRACKER_SOURCES if s != owner]:
        marker = uuid.uuid4().hex
        request = VALID[owner](world, marker)
        request["url"] = f"/v1/push/{target}"
        response = world.client.post(**request)
        assert response.status_code in (401, 403), (owner, target, response.text)
        assert response.json()["code"] != "ok"
        values = [r.value.decode() for r in read_topic(world.broker, topic_of(world, target))]
        assert not [v for v in values if marker in v], (owner, target)
