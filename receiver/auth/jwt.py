"""JWT bearer tokens signed with the sender's private key (iotcomms callbacks and others).

Keys are parsed once, when the verifier is built; a request only ever meets key
objects. The algorithm comes from the source's allow-list, never from the token:
``alg: none``, HMAC algorithms and anything outside the list are refused before a
signature is looked at, and each key only serves the algorithm family of its type,
so an HS256 token "signed" with the public key can never verify.

A signature that verified once is remembered (bounded cache, keyed by the exact
token), because vendors reuse a token for many callbacks and RSA verification is the
costliest step of a request. The subject and the time rules are checked again on
every use, so a cached token still expires on time.
"""

from __future__ import annotations

import hmac
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.types import Options

from receiver.auth.principal import Principal
from receiver.errors import (
    ConfigError,
    InvalidTokenError,
    SubjectMismatchError,
    TokenExpiredError,
    TokenLifetimeExceededError,
    TokenNotYetValidError,
    TokenTooOldError,
)
from receiver.settings import JwtAuthSettings

log = logging.getLogger("receiver.auth")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

_KEY_TYPES: dict[str, tuple[type[Any], ...]] = {
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
_SIGNATURE_ONLY: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """When a token is acceptable: the iotcomms defaults are 1 h age and 90 min lifetime."""

    max_age: int = 3600
    max_lifetime: int = 5400
    leeway: int = 30
    require_exp: bool = False

    def check(self, claims: Mapping[str, Any], now: float) -> None:
        """Raise the ``InvalidTokenError`` subclass that names the first broken rule."""
        iat = _numeric(claims, "iat")
        if iat is None:
            raise InvalidTokenError("the token has no `iat` claim; set it to the signing time in Unix seconds")
        exp = _numeric(claims, "exp")
        nbf = _numeric(claims, "nbf")
        if exp is None and self.require_exp:
            raise InvalidTokenError("the token has no `exp` claim, which this source requires")
        if iat > now + self.leeway or (nbf is not None and nbf > now + self.leeway):
            msg = "the token is not valid yet (`iat` or `nbf` lies in the future); check the sender's clock"
            raise TokenNotYetValidError(msg)
        if exp is not None and exp - iat > self.max_lifetime:
            msg = f"the token's lifetime (`exp` - `iat`) exceeds {self.max_lifetime} s; sign a shorter one"
            raise TokenLifetimeExceededError(msg)
        if exp is not None and now > exp + self.leeway:
            raise TokenExpiredError("the token has expired (`exp` has passed); sign a new one")
        if now - iat > self.max_age + self.leeway:
            msg = f"the token was issued more than {self.max_age} s ago (`iat`); sign a new one"
            raise TokenTooOldError(msg)


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"the token's `{name}` claim must be a number of Unix seconds"
        raise InvalidTokenError(msg)
    return float(value)


def load_public_keys(paths: Sequence[Path]) -> list[PublicKey]:
    """Parse PEM public keys at startup; a bad file is a ``ConfigError`` naming it."""
    keys: list[PublicKey] = []
    for index, path in enumerate(paths):
        try:
            key = load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ConfigError([f"public_keys.{index}: cannot read {path}: {exc.strerror}"]) from exc
        except ValueError as exc:
            raise ConfigError([f"public_keys.{index}: {path} is not a PEM public key"]) from exc
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise ConfigError([f"public_keys.{index}: {path} holds an unsupported key type"])
        keys.append(key)
    return keys


class JwtVerifier:
    """Verifies ``Authorization: Bearer <jwt>`` for one source."""

    scheme = "bearer"
    challenge = 'Bearer realm="receiver"'

    def __init__(
        self,
        *,
        keys: Sequence[PublicKey],
        algorithms: Sequence[str],
        subject: str | None,
        policy: TimePolicy,
    ) -> None:
        self._algorithms = frozenset(algorithms)
        self._keys_by_alg = {alg: [k for k in keys if isinstance(k, _KEY_TYPES[alg[:2]])] for alg in self._algorithms}
        self._subject = subject
        self._policy = policy
        self._decoder = jwt.PyJWT()
        self._verified: OrderedDict[str, Mapping[str, Any]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: JwtAuthSettings, default_subject: str | None) -> JwtVerifier:
        keys = load_public_keys(settings.public_keys)
        for alg in settings.algorithms:
            if not any(isinstance(k, _KEY_TYPES[alg[:2]]) for k in keys):
                raise ConfigError([f"algorithms: no configured public key can verify {alg}"])
        policy = TimePolicy(
            max_age=settings.max_age_seconds,
            max_lifetime=settings.max_lifetime_seconds,
            leeway=settings.leeway_seconds,
            require_exp=settings.require_exp,
        )
        subject = settings.subject or default_subject
        return cls(keys=keys, algorithms=settings.algorithms, subject=subject, policy=policy)

    def verify(self, credentials: str, now: float) -> Principal:
        claims = self._verified.get(credentials)
        if claims is None:
            claims = self._verify_signature(credentials)
            self._check_subject(claims)
        try:
            self._policy.check(claims, now)
        except InvalidTokenError:
            self._verified.pop(credentials, None)
            raise
        self._remember(credentials, claims)
        return Principal(method="jwt", name=str(claims.get("sub", "")), claims=claims)

    def _verify_signature(self, token: str) -> Mapping[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            msg = "the bearer token is not a well-formed JWT"
            raise InvalidTokenError(msg) from exc
        alg = header.get("alg")
        if alg not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            msg = f"the token's algorithm {str(alg)[:16]!r} is not accepted here; sign with {allowed}"
            raise InvalidTokenError(msg)
        for key in self._keys_by_alg[alg]:
            try:
                claims: dict[str, Any] = self._decoder.decode(token, key, algorithms=[alg], options=_SIGNATURE_ONLY)
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as exc:
                log.info("jwt rejected: %s", type(exc).__name__)
                raise InvalidTokenError("the bearer token could not be decoded as a signed JWT") from exc
            return claims
        raise InvalidTokenError("the token's signature does not verify with this source's keys")

    def _check_subject(self, claims: Mapping[str, Any]) -> None:
        if self._subject is None:
            return
        sub = claims.get("sub")
        if not isinstance(sub, str) or not hmac.compare_digest(sub.encode(), self._subject.encode()):
            raise SubjectMismatchError("the token's `sub` claim is not the domain this source belongs to")

    def _remember(self, token: str, claims: Mapping[str, Any]) -> None:
        self._verified[token] = claims
        self._verified.move_to_end(token)
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
