"""Key material loaded once: secrets and public keys with their ids and expiry instants.

Verifiers hold these, never settings: parsing and file reading happen at startup (and
on reload), not per request. ``usable(now)`` is the one place expiry is decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from receiver.auth_settings import KeyFile, Secret
from receiver.errors import ConfigError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


def _instant(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass(frozen=True, slots=True)
class LiveSecret:
    """A shared secret's bytes, its id (never the secret) and when it stops being accepted."""

    id: str
    value: bytes
    not_after: float | None = None

    def usable(self, now: float) -> bool:
        return self.not_after is None or now <= self.not_after


@dataclass(frozen=True, slots=True)
class LiveKey:
    """A parsed public key, its ``kid`` and expiry."""

    id: str
    key: Any  # one of PublicKey; Any because PyJWT and cryptography type it differently
    kid: str | None = None
    not_after: float | None = None

    def usable(self, now: float) -> bool:
        return self.not_after is None or now <= self.not_after


def load_secrets(secrets: Sequence[Secret], what: str = "secrets") -> list[LiveSecret]:
    """Read every secret now; problems name ``<what>.<index>``."""
    loaded = []
    for index, secret in enumerate(secrets):
        try:
            value = secret.secret().get_secret_value().encode()
        except ValueError as exc:
            raise ConfigError([f"{what}.{index}: {exc}"]) from exc
        loaded.append(LiveSecret(secret.id or f"{what}.{index}", value, _instant(secret.not_after)))
    return loaded


def load_public_keys(keys: Sequence[KeyFile], what: str = "public_keys") -> list[LiveKey]:
    """Parse PEM public keys now; a bad file is a ``ConfigError`` naming it."""
    loaded = []
    for index, spec in enumerate(keys):
        try:
            key = load_pem_public_key(spec.path.read_bytes())
        except OSError as exc:
            raise ConfigError([f"{what}.{index}: cannot read {spec.path}: {exc.strerror}"]) from exc
        except ValueError as exc:
            raise ConfigError([f"{what}.{index}: {spec.path} is not a PEM public key"]) from exc
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise ConfigError([f"{what}.{index}: {spec.path} holds an unsupported key type"])
        loaded.append(LiveKey(spec.kid or spec.path.name, key, spec.kid, _instant(spec.not_after)))
    return loaded


def first_match(secrets: Sequence[LiveSecret], now: float, matches: Callable[[bytes], bool]) -> LiveSecret | None:
    """The first usable secret ``matches`` accepts. Every usable secret is tried, whichever
    matched, so the time taken does not tell which one did; ``matches`` must compare in
    constant time (``hmac.compare_digest``)."""
    found = None
    for secret in secrets:
        if secret.usable(now) and matches(secret.value) and found is None:
            found = secret
    return found
