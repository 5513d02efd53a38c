"""Shared fixtures: key pairs, settings builders and the app; the real broker comes from tests/support."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.settings import Settings, build_settings

pytest_plugins = ("tests.support.kafka", "tests.support.redis")  # the real broker and Redis, a prefix per test

DOMAIN = "customer47.prod-eu-north-1.iotcomms.io"
OTHER_DOMAIN = "customer48.prod-eu-north-1.iotcomms.io"
BASIC_PASSWORD = "s3cret-basic-password"


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    public_path: Path

    def token(self, claims: dict[str, Any], alg: str = "RS256", headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private_pem, algorithm=alg, headers=headers)


def _write_pair(directory: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / "public.pem").write_bytes(public_pem)
    return KeyPair(private_pem, public_pem, directory / "public.pem")


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def tenant_key(keys_dir: Path) -> KeyPair:
    """The RSA key pair of customer47's callback signer."""
    return _write_pair(keys_dir / "customer47", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="session")
def other_key(keys_dir: Path) -> KeyPair:
    """Another tenant's RSA key pair (customer48)."""
    return _write_pair(keys_dir / "customer48", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="session")
def ec_key(keys_dir: Path) -> KeyPair:
    return _write_pair(keys_dir / "ec", ec.generate_private_key(ec.SECP256R1()))


def claims(sub: str = DOMAIN, *, iat_offset: int = 0, ttl: int | None = 300, **extra: Any) -> dict[str, Any]:
    """iotcomms-style claims relative to now: ``iat`` = now + offset, ``exp`` = iat + ttl."""
    iat = int(time.time()) + iat_offset
    result: dict[str, Any] = {"sub": sub, "iat": iat, **extra}
    if ttl is not None:
        result["exp"] = iat + ttl
    return result


def hs256_with_public_key(key: KeyPair, payload: dict[str, Any]) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the RSA public key PEM."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned_token(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token with an empty signature."""
    return jwt.encode(payload, None, algorithm="none")  # type: ignore[arg-type]


def message_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": f"sip:alice@{DOMAIN}",
        "to": "sip:bob@example.com",
        "contentType": "text/plain",
        "body": "hello from the door sensor",
        "replyId": "r-0f8a/+=opaque",
    }
    body.update(overrides)
    return body


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "basic-password"
    path.write_text(BASIC_PASSWORD + "\n")
    return path


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tenant_key: KeyPair, other_key: KeyPair, password_file: Path, tmp_path: Path) -> SettingsFactory:
    """Settings with customer47 (JWT + Basic) and customer48 (JWT), built without the environment."""

    def build(kafka: dict[str, Any] | None = None, **overrides: Any) -> Settings:
        # Topics appear on first write (the test broker auto-creates them); the startup
        # topic check has tests of its own.
        data: dict[str, Any] = {
            "server": {"max_body_bytes": 4096},
            "kafka": {"topics": {"check": False}, **(kafka or {})},
            "store": {"path": str(tmp_path / "events.db")},
            "sources": {
                "customer47": {
                    "kind": "iotcomms",
                    "domain": DOMAIN,
                    "auth": [
                        {
                            "type": "jwt",
                            "algorithms": ["RS256"],
                            "public_keys": [str(tenant_key.public_path)],
                        },
                        {"type": "basic", "username": "iotcomms", "password_file": str(password_file)},
                    ],
                },
                "customer48": {
                    "kind": "iotcomms",
                    "domain": OTHER_DOMAIN,
                    "auth": [{"type": "jwt", "public_keys": [str(other_key.public_path)]}],
                },
            },
        }
        data.update(overrides)
        return build_settings(data, environ=False)

    return build


@pytest.fixture
def store_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """The app on the embedded store (no Kafka), lifespan running."""
    with TestClient(create_app(make_settings())) as client:
        yield client
