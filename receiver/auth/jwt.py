"""JWT bearer tokens: public keys (PEM files or a JWKS, chosen by ``kid``) or HMAC secrets.

Keys are parsed once, when the verifier is built; a request only ever meets key
objects. The algorithm comes from the source's allow-list, never from the token:
``alg: none`` and anything outside the list are refused before a signature is looked
at, HMAC algorithms are only ever tried with the configured ``secrets`` and asymmetric
ones only with public keys, so an HS256 token "signed" with a public key cannot verify.

A signature that verified once is remembered (bounded cache, keyed by the exact token),
because vendors reuse a token for many callbacks and RSA verification is the costliest
step of a request. The key's expiry, the time rules and ``jti`` replay are checked again
on every use, so a cached token still expires on time.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from pydantic import Field, field_validator, model_validator

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal, SingleUse
from receiver.auth.material import KeyFile, LiveKey, LiveSecret, Secret, as_key_files, load_public_keys, load_secrets
from receiver.auth.tokens import SIGNATURE_ONLY, numeric_claim
from receiver.errors import (
    ConfigError,
    InvalidTokenError,
    ReplayedRequestError,
    SubjectMismatchError,
    TokenExpiredError,
    TokenLifetimeExceededError,
    TokenNotYetValidError,
    TokenTooOldError,
)

log = logging.getLogger("receiver.auth")

Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
]  # fmt: skip
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


class JwtAuthSettings(MethodSettings):
    """JWT bearer tokens: public keys (PEM or JWKS, chosen by ``kid``) or HMAC secrets."""

    type: Literal["jwt"]
    algorithms: list[Algorithm] = Field(default=["RS256"], min_length=1)
    public_keys: list[KeyFile] = Field(default_factory=list, description="PEM files (plain paths accepted)")
    jwks_file: Path | None = Field(default=None, description="a JWKS document; keys chosen by `kid`")
    secrets: list[Secret] = Field(default_factory=list, description="HMAC secrets for HS256/384/512")
    subject: str | None = Field(default=None, description="required `sub`; defaults to the source's domain")
    issuer: str | None = Field(default=None, description="required `iss`, when set")
    audience: str | None = Field(default=None, description="required in `aud`, when set")
    require_iat: bool = True
    max_age_seconds: int | None = Field(default=3600, gt=0, description="oldest accepted `iat`; null: no limit")
    max_lifetime_seconds: int | None = Field(default=5400, gt=0, description="largest `exp - iat`; null: no limit")
    leeway_seconds: int = Field(default=30, ge=0, le=300, description="clock skew allowed")
    require_exp: bool = False
    reject_replayed_jti: bool = Field(default=False, description="a `jti` seen before within its lifetime fails")

    _paths = field_validator("public_keys", mode="before")(as_key_files)

    @model_validator(mode="after")
    def _has_material(self) -> JwtAuthSettings:
        wants_hmac = any(a in HMAC_ALGORITHMS for a in self.algorithms)
        wants_keys = any(a not in HMAC_ALGORITHMS for a in self.algorithms)
        if wants_hmac and not self.secrets:
            raise ValueError("HS256/HS384/HS512 need `secrets`")
        if wants_keys and not (self.public_keys or self.jwks_file):
            raise ValueError("asymmetric algorithms need `public_keys` or `jwks_file`")
        if self.secrets and not wants_hmac:
            raise ValueError("`secrets` are only used with HS256/HS384/HS512 in `algorithms`")
        return self


_KEY_TYPES: dict[str, tuple[type[Any], ...]] = {
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """When a token is acceptable: the defaults are iotcomms' (1 h age, 90 min lifetime)."""

    max_age: int | None = 3600
    max_lifetime: int | None = 5400
    leeway: int = 30
    require_iat: bool = True
    require_exp: bool = False

    def check(self, claims: Mapping[str, Any], now: float) -> None:
        """Raise the ``InvalidTokenError`` subclass that names the first broken rule."""
        iat = numeric_claim(claims, "iat")
        exp = numeric_claim(claims, "exp")
        nbf = numeric_claim(claims, "nbf")
        if iat is None and self.require_iat:
            raise InvalidTokenError("the token has no `iat` claim; set it to the signing time in Unix seconds")
        if exp is None and self.require_exp:
            raise InvalidTokenError("the token has no `exp` claim, which this source requires")
        if (iat is not None and iat > now + self.leeway) or (nbf is not None and nbf > now + self.leeway):
            msg = "the token is not valid yet (`iat` or `nbf` lies in the future); check the sender's clock"
            raise TokenNotYetValidError(msg)
        if iat is not None and exp is not None and self.max_lifetime is not None and exp - iat > self.max_lifetime:
            msg = f"the token's lifetime (`exp` - `iat`) exceeds {self.max_lifetime} s; sign a shorter one"
            raise TokenLifetimeExceededError(msg)
        if exp is not None and now > exp + self.leeway:
            raise TokenExpiredError("the token has expired (`exp` has passed); sign a new one")
        if iat is not None and self.max_age is not None and now - iat > self.max_age + self.leeway:
            msg = f"the token was issued more than {self.max_age} s ago (`iat`); sign a new one"
            raise TokenTooOldError(msg)

    @property
    def bounds_lifetime(self) -> bool:
        """Does every accepted token stop being accepted at a known instant (``exp``, or ``iat`` plus the age limit)?"""
        return self.require_exp or (self.require_iat and self.max_age is not None)

    def valid_until(self, claims: Mapping[str, Any]) -> float:
        """The last instant this token could still be accepted: its ``jti`` is remembered until then.

        ``reject_replayed_jti`` is refused at load unless every token has such an instant
        (``bounds_lifetime``), so a token is never forgotten while it is still accepted.
        """
        ends = [math.inf]
        exp, iat = numeric_claim(claims, "exp"), numeric_claim(claims, "iat")
        if exp is not None:
            ends.append(exp + self.leeway)
        if iat is not None and self.max_age is not None:
            ends.append(iat + self.max_age + self.leeway)
        return min(ends)


def _strings(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


def load_jwks(path: Any) -> list[LiveKey]:
    """Public keys of a JWKS file, each named by its ``kid``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        key_set = jwt.PyJWKSet.from_dict(document)
    except OSError as exc:
        raise ConfigError([f"jwks_file: cannot read {path}: {exc.strerror}"]) from exc
    except (ValueError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
        raise ConfigError([f"jwks_file: {path} is not a usable JWKS ({exc})"]) from exc
    return [
        LiveKey(k.key_id or f"jwks.{i}", k.key, k.key_id) for i, k in enumerate(key_set.keys) if k.key_type != "oct"
    ]


class JwtVerifier:
    """Verifies ``Authorization: Bearer <jwt>`` for one source."""

    method = "jwt"
    challenge = 'Bearer realm="receiver"'
    credential_headers = frozenset({"authorization"})

    def __init__(  # noqa: PLR0913 - keyword-only; from_settings is the usual way in
        self,
        *,
        keys: Sequence[LiveKey],
        secrets: Sequence[LiveSecret],
        algorithms: Sequence[str],
        subject: str | None,
        issuer: str | None = None,
        audience: str | None = None,
        policy: TimePolicy,
        reject_replayed_jti: bool = False,
    ) -> None:
        self._algorithms = frozenset(algorithms)
        self._keys = list(keys)
        self._secrets = list(secrets)
        self._subject = subject
        self._issuer = issuer
        self._audience = audience
        self._policy = policy
        self._single_use = reject_replayed_jti
        self._decoder = jwt.PyJWT()
        self._verified: OrderedDict[str, tuple[Mapping[str, Any], str, float | None]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: JwtAuthSettings, default_subject: str | None) -> JwtVerifier:
        keys = load_public_keys(settings.public_keys)
        if settings.jwks_file is not None:
            keys += load_jwks(settings.jwks_file)
        for alg in settings.algorithms:
            if alg not in HMAC_ALGORITHMS and not any(isinstance(k.key, _KEY_TYPES[alg[:2]]) for k in keys):
                raise ConfigError([f"algorithms: no configured public key can verify {alg}"])
        policy = TimePolicy(
            max_age=settings.max_age_seconds,
            max_lifetime=settings.max_lifetime_seconds,
            leeway=settings.leeway_seconds,
            require_iat=settings.require_iat,
            require_exp=settings.require_exp,
        )
        if settings.reject_replayed_jti and not policy.bounds_lifetime:
            msg = (
                "reject_replayed_jti: a token without `exp` would be accepted forever, so its `jti` could never be"
                " forgotten; set require_exp, or keep require_iat with max_age_seconds"
            )
            raise ConfigError([msg])
        return cls(
            keys=keys,
            secrets=load_secrets(settings.secrets),
            algorithms=settings.algorithms,
            subject=settings.subject or default_subject,
            issuer=settings.issuer,
            audience=settings.audience,
            policy=policy,
            reject_replayed_jti=settings.reject_replayed_jti,
        )

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        return self.method, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}

    def offload(self, credentials: Credentials) -> bool:
        del credentials
        return False  # no check here is slow enough to leave the event loop

    def is_costly(self, credentials: Credentials) -> bool:
        """A token not remembered, signed with a public-key algorithm (HMAC ones are cheap)."""
        authorization = credentials.authorization()
        token = authorization[1] if authorization else ""
        if token in self._verified:
            return False
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            return False  # refused before any signature is checked
        return alg not in HMAC_ALGORITHMS

    def carries(self, credentials: Credentials) -> bool:
        authorization = credentials.authorization()
        return authorization is not None and authorization[0] == "bearer"

    def expiries(self) -> Iterable[Expiry]:
        items: list[LiveKey | LiveSecret] = [*self._keys, *self._secrets]
        for item in items:
            if item.not_after is not None:
                yield Expiry(self.method, item.id, item.not_after)

    def verify(self, credentials: Credentials) -> Principal:
        authorization = credentials.authorization()
        token = authorization[1] if authorization else ""
        now = credentials.now
        cached = self._verified.get(token)
        if cached is not None and (cached[2] is None or now <= cached[2]):
            claims, key_id, _ = cached
        else:
            self._verified.pop(token, None)
            claims, key_id, not_after = self._verify_signature(token, now)
            self._check_identity(claims)
            self._verified[token] = (claims, key_id, not_after)
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        try:
            self._policy.check(claims, now)
        except InvalidTokenError:
            self._verified.pop(token, None)
            raise
        once = self._single_use_of(claims) if self._single_use else None
        groups = claims.get("groups")
        return Principal(
            method=self.method,
            name=str(claims.get("sub", "")),
            key_id=key_id,
            roles=_strings(claims.get("roles", claims.get("scope"))),
            groups=None if groups is None else _strings(groups),
            claims=claims,
            single_use=once,
        )

    def _candidates(self, alg: str, kid: str | None, now: float) -> list[tuple[Any, str, float | None]]:
        if alg in HMAC_ALGORITHMS:
            pool: list[tuple[Any, str, str | None, float | None, bool]] = [
                (s.value, s.id, s.id, s.not_after, s.usable(now)) for s in self._secrets
            ]
        else:
            pool = [
                (k.key, k.id, k.kid, k.not_after, k.usable(now))
                for k in self._keys
                if isinstance(k.key, _KEY_TYPES[alg[:2]])
            ]
        if kid is not None and any(entry[2] is not None for entry in pool):
            pool = [entry for entry in pool if entry[2] == kid]  # the token names its key
        return [(key, key_id, not_after) for key, key_id, _, not_after, usable in pool if usable]

    def _verify_signature(self, token: str, now: float) -> tuple[Mapping[str, Any], str, float | None]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError("the bearer token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            msg = f"the token's algorithm {str(alg)[:16]!r} is not accepted here; sign with {allowed}"
            raise InvalidTokenError(msg)
        kid = header.get("kid")
        for key, key_id, not_after in self._candidates(alg, kid if isinstance(kid, str) else None, now):
            try:
                claims: dict[str, Any] = self._decoder.decode(token, key, algorithms=[alg], options=SIGNATURE_ONLY)
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as exc:
                log.info("receiver.token_rejected", extra={"method": "jwt", "error": type(exc).__name__})
                raise InvalidTokenError("the bearer token could not be decoded as a signed JWT") from exc
            return claims, key_id, not_after
        raise InvalidTokenError("the token's signature does not verify with this source's current keys")

    def _check_identity(self, claims: Mapping[str, Any]) -> None:
        if self._subject is not None:
            sub = claims.get("sub")
            if not isinstance(sub, str) or not hmac.compare_digest(sub.encode(), self._subject.encode()):
                raise SubjectMismatchError("the token's `sub` claim does not name this source")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise InvalidTokenError("the token's `iss` claim is not the issuer this source trusts")
        if self._audience is not None:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self._audience not in audiences:
                raise InvalidTokenError("the token's `aud` claim does not include this receiver")

    def _single_use_of(self, claims: Mapping[str, Any]) -> SingleUse:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidTokenError("this source requires a unique `jti` claim in every token")
        replayed = "this token (`jti`) was already used for another request; sign a new one for each request"
        return SingleUse(jti, self._policy.valid_until(claims), replayed)


METHOD = Method(
    name=JwtVerifier.method,
    settings=JwtAuthSettings,
    build=JwtVerifier.from_settings,
    codes=frozenset(
        {
            InvalidTokenError,
            TokenExpiredError,
            TokenTooOldError,
            TokenNotYetValidError,
            TokenLifetimeExceededError,
            SubjectMismatchError,
            ReplayedRequestError,
        }
    ),
    credential_headers=JwtVerifier.credential_headers,
)
