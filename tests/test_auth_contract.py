"""The auth-method contract, run over every registered method.

Each method in ``METHODS`` needs a ``Sample`` here (its settings, a valid credential, a
wrong one); a method added without one fails ``test_every_method_has_a_sample``. Through
the running app (publishing into memory: nothing here is the broker's business), each
method must: keep its credential headers
out of dead letters and out of the vendor's view, have its refusals counted by
``receiver_auth_failures_total``, raise only codes the error tree calls authentication
codes, and document the security scheme its settings configure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.auth.methods import METHODS
from receiver.errors import auth_codes
from receiver.request_log import AUTH_CODES
from receiver.settings import build_settings
from tests.support.publisher import MemoryPublisher

SECRET = "auth-contract-secret-0123456789abcdef"
WH_SECRET = "whsec_" + base64.b64encode(b"auth-contract-webhook-secret-32b").decode()
OPERATOR = "OP0099887766"
IMSI = "440101234567890"
BODY = b'{"group": "g1"}'  # a tracker message without its deviceId: authenticated, then invalid
Headers = dict[str, str]


@dataclass(frozen=True)
class Sample:
    """One method: its settings, and the headers of a valid and of a wrong credential for ``BODY``."""

    settings: Callable[[Path], dict[str, Any]]
    valid: Callable[[Path], Headers]
    wrong: Callable[[Path], Headers]
    header: str  # the header carrying the credential, as configured


def _rsa(directory: Path) -> rsa.RSAPrivateKey:
    """One RSA key per test directory (written once, as public.pem)."""
    path = directory / "private.pem"
    if not path.exists():
        key = rsa.generate_private_key(65537, 2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (directory / "public.pem").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def _jwt(directory: Path, sub: str = "tracker-user") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, _rsa(directory), algorithm="RS256")


def _funk(directory: Path, operator: str = OPERATOR) -> str:
    claims = {
        "iss": "https://soracom.io",
        "sub": "funk.soracom.io",
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
        "ctx": {"operatorId": operator, "imsi": IMSI},
    }
    return jwt.encode(claims, _rsa(directory), algorithm="RS256", headers={"kid": "public.pem"})


def _beam(secret: str) -> Headers:
    stamp = str(int(time.time() * 1000))
    signed = f"{secret}x-soracom-imsi={IMSI}x-soracom-timestamp={stamp}"
    return {
        "X-Soracom-Imsi": IMSI,
        "X-Soracom-Timestamp": stamp,
        "X-Soracom-Signature-Version": "20151001",
        "X-Soracom-Signature": hashlib.sha256(signed.encode()).hexdigest(),
    }


def _webhook(secret: str) -> Headers:
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + BODY, hashlib.sha256).digest())
    return {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{mac.decode()}"}


def _basic(password: str) -> Headers:
    return {"Authorization": "Basic " + base64.b64encode(f"pusher:{password}".encode()).decode()}


SAMPLES: dict[str, Sample] = {
    "jwt": Sample(
        lambda d: {"type": "jwt", "public_keys": [str(d / "public.pem")], "subject": "tracker-user"},
        lambda d: {"Authorization": f"Bearer {_jwt(d)}"},
        lambda d: {"Authorization": f"Bearer {_jwt(d, sub='someone-else')}"},
        "authorization",
    ),
    "bearer": Sample(
        lambda _d: {"type": "bearer", "tokens": [{"sha256": hashlib.sha256(SECRET.encode()).hexdigest()}]},
        lambda _d: {"Authorization": f"Bearer {SECRET}"},
        lambda _d: {"Authorization": "Bearer not-the-token"},
        "authorization",
    ),
    "basic": Sample(
        lambda _d: {"type": "basic", "username": "pusher", "password": SECRET},
        lambda _d: _basic(SECRET),
        lambda _d: _basic("wrong"),
        "authorization",
    ),
    "soracom_beam": Sample(
        lambda _d: {"type": "soracom_beam", "keys": [{"value": SECRET}]},
        lambda _d: _beam(SECRET),
        lambda _d: _beam("another-key"),
        "x-soracom-signature",
    ),
    "soracom_funk": Sample(
        lambda d: {"type": "soracom_funk", "public_keys": [str(d / "public.pem")], "operator_id": OPERATOR},
        lambda d: {"x-soracom-token": _funk(d)},
        lambda d: {"x-soracom-token": _funk(d, operator="OP-other")},
        "x-soracom-token",
    ),
    "standard_webhooks": Sample(
        lambda _d: {"type": "standard_webhooks", "secrets": [{"value": WH_SECRET}]},
        lambda _d: _webhook(WH_SECRET),
        lambda _d: _webhook("whsec_" + base64.b64encode(b"x" * 32).decode()),
        "webhook-signature",
    ),
    "hmac": Sample(
        # A custom header: it must be scrubbed and documented as configured, not as the default.
        lambda _d: {"type": "hmac", "header": "X-Signature", "prefix": "", "secrets": [{"value": SECRET}]},
        lambda _d: {"X-Signature": hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()},
        lambda _d: {"X-Signature": hmac.new(b"wrong", BODY, hashlib.sha256).hexdigest()},
        "x-signature",
    ),
}


@dataclass
class World:
    client: TestClient
    keys: Path
    published: MemoryPublisher


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("auth-contract")
    _rsa(directory)
    sources = {
        name.replace("_", "-"): {"kind": "tracker", "auth": [sample.settings(directory)]}
        for name, sample in SAMPLES.items()
    }
    settings = build_settings({"server": {"failure_limit_per_minute": 0}, "sources": sources}, environ=False)
    published = MemoryPublisher()
    with TestClient(create_app(settings, publisher=published)) as client:
        yield World(client, directory, published)


def post(world: World, method: str, headers: Headers) -> Any:
    source = method.replace("_", "-")
    return world.client.post(
        f"/v1/push/{source}", content=BODY, headers={"Content-Type": "application/json", **headers}
    )


def auth_failures(world: World, method: str) -> dict[str, float]:
    """``receiver_auth_failures_total`` for the method's source, by reason."""
    source = method.replace("_", "-")
    found: dict[str, float] = {}
    for line in world.client.get("/metrics").text.splitlines():
        if line.startswith("receiver_auth_failures_total{") and f'source="{source}"' in line:
            reason = line.split('reason="')[1].split('"')[0]
            found[reason] = float(line.rsplit(" ", 1)[1])
    return found


def test_every_method_has_a_sample() -> None:
    """A method joins the registry only with a contract sample: this list is the registry's."""
    assert set(SAMPLES) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_codes_are_authentication_codes_and_counted(method: str) -> None:
    """Every code a method declares is an authentication code, and the failure metric counts it."""
    codes = {cls.code for cls in METHODS[method].codes}
    assert codes
    assert codes <= auth_codes()
    assert codes <= AUTH_CODES


@pytest.mark.parametrize("method", sorted(METHODS))
def test_refusals_are_counted_by_reason(world: World, method: str) -> None:
    """A wrong credential is refused with an authentication code, and the metric counts that code."""
    before = auth_failures(world, method)
    answer = post(world, method, SAMPLES[method].wrong(world.keys))
    assert answer.status_code == 401, answer.text
    code = answer.json()["code"]
    assert code in {cls.code for cls in METHODS[method].codes}
    assert auth_failures(world, method).get(code, 0) == before.get(code, 0) + 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_credential_headers_never_reach_dead_letters(world: World, method: str) -> None:
    """An authenticated but invalid message is dead-lettered without the header that carried the credential."""
    sample = SAMPLES[method]
    answer = post(world, method, {**sample.valid(world.keys), "X-Marker": method})
    assert answer.status_code == 422, answer.text
    letters = [json.loads(record.value) for record in world.published.on("iot.deadletter")]
    (letter,) = [x for x in letters if x["headers"].get("x-marker") == method]
    assert sample.header not in letter["headers"]
    secret_values = {v for k, v in sample.valid(world.keys).items() if k.lower() == sample.header}
    assert not any(value in json.dumps(letter) for value in secret_values)
    assert letter["principal"]["method"] == method


@pytest.mark.parametrize("method", sorted(METHODS))
def test_openapi_documents_the_configured_scheme(world: World, method: str) -> None:
    """The document's security schemes name each method as its settings configure it."""
    schemes = world.client.get("/openapi.json").json()["components"]["securitySchemes"]
    sample = SAMPLES[method]
    documented = [s for s in schemes.values() if s.get("in") == "header"]
    if sample.header == "authorization":
        assert any(s.get("type") == "http" for s in schemes.values())
    else:
        assert sample.header in {s["name"].lower() for s in documented}
    assert "X-Hub-Signature-256" not in {s.get("name") for s in documented}, "no default that is not configured"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_vendor_code_never_sees_the_credential(world: World, method: str) -> None:
    """The request as a vendor sees it lacks the method's credential header, as configured."""
    from receiver.events import Delivery  # noqa: PLC0415
    from receiver.intake import inbound_of  # noqa: PLC0415
    from receiver.sources import build_sources  # noqa: PLC0415

    source_id = method.replace("_", "-")
    settings = build_settings(
        {"sources": {source_id: {"kind": "tracker", "auth": [SAMPLES[method].settings(world.keys)]}}}, environ=False
    )
    source = build_sources(settings)[source_id]
    headers = {k.lower().encode(): v.encode() for k, v in SAMPLES[method].valid(world.keys).items()}
    delivery = Delivery(source_id, "push", BODY, "application/json", {**headers, b"x-other": b"kept"}, "", time.time())
    inbound = inbound_of(source.vendor, delivery, source.auth.credential_headers)
    assert SAMPLES[method].header not in inbound.headers
    assert inbound.headers["x-other"] == "kept"
