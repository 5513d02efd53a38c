"""Key material: how settings name secrets and key files, and the loaded forms verifiers hold.

Every credential may carry an ``id`` (shown in logs, audit records and metrics instead
of the secret) and a ``not_after`` instant after which it is refused, so a rotation
can be scheduled in the config and a forgotten one shows up in the expiry metric.
Secrets are ``SecretStr`` or files read once at load time.

Verifiers hold the loaded forms, never settings: parsing and file reading happen at
startup (and on reload), not per request. ``usable(now)`` is the one place expiry is
decided.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, model_validator

from receiver.errors import ConfigError

log = logging.getLogger("receiver.auth")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def read_secret(path: Path) -> SecretStr:
    """Read a secret file as mounted by Kubernetes: trailing newline dropped, nothing else.

    A file others can read is used, with a warning naming it (never its content).
    """
    try:
        warn_if_exposed(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read secret file {path}: {exc.strerror}"
        raise ValueError(msg) from exc
    value = text.rstrip("\r\n")
    if not value:
        msg = f"secret file {path} is empty"
        raise ValueError(msg)
    return SecretStr(value)


def warn_if_exposed(path: Path) -> None:
    """Warn when users other than this process's own (and its groups) can read a secret file.

    Group read for one of the process's groups is how Kubernetes shares a Secret with a
    non-root container (``fsGroup``, the chart's ``defaultMode: 0440``), so that is fine.
    """
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    foreign_group = info.st_gid != os.getgid() and info.st_gid not in os.getgroups()
    if mode & (stat.S_IROTH | stat.S_IWOTH) or (mode & stat.S_IRGRP and foreign_group):
        log.warning("receiver.secret_file_exposed", extra={"path": str(path), "mode": f"{mode:04o}"})


class KeyFile(_Frozen):
    """A public key in a PEM file, with its key id (``kid``) and expiry."""

    path: Path
    kid: str | None = None
    not_after: AwareDatetime | None = None


def as_key_files(value: object) -> object:
    """Plain paths in a ``public_keys`` list stand for ``{path: ...}``."""
    if not isinstance(value, list):
        return value
    return [{"path": v} if isinstance(v, str | Path) else v for v in value]


class Secret(_Frozen):
    """A shared secret given inline or as a file, with an id and an expiry."""

    value: SecretStr | None = None
    file: Path | None = None
    id: str | None = Field(default=None, description="names the secret in logs and metrics; `kid` for JWT")
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.value is None) == (self.file is None):
            msg = "give exactly one of value or file"
            raise ValueError(msg)
        return self

    def secret(self) -> SecretStr:
        if self.file is not None:
            return read_secret(self.file)
        if self.value is None:  # the validator guarantees one of the two
            msg = "give exactly one of value or file"
            raise ValueError(msg)
        return self.value


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
