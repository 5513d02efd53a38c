"""Soracom Funk's ``x-soracom-token``: an RS256 JWT signed by Soracom, key chosen by ``kid``.

Soracom publishes each signing key as ``<kid>`` (a file name like
``v1-<hex>-x509.pem``) under https://s3-ap-northeast-1.amazonaws.com/soracom-public-keys/;
a key configured without a ``kid`` goes by its file name, which is that ``kid``. A
token whose ``kid`` names no configured, unexpired key is refused without a signature
check, and the algorithm is RS256 whatever the token's header says.

The claims, as Soracom documents them (users.soracom.io/ja-jp/docs/funk/validate-token)::

    {"iss": "https://soracom.io", "sub": "funk.soracom.io", "typ": "soracom/token/v1",
     "aud": "srn:soracom:<operator>:<coverage>:Subscriber:<imsi>", "jti": "...", "iat": ...,
     "ctx": {"operatorId": "OP...", "resourceType": "Subscriber", "resourceId": "<imsi>",
             "srn": "...", "imsi": "...", "simId": "...", "imei": "...", "sourceProtocol": "udp"}}

``sub`` must be ``funk.soracom.io``: Soracom signs other tokens (Endorse) with the same
keys and issuer, and those must not pass as Funk calls. Only ``ctx.operatorId`` ties a
token to one Soracom account, so a source should always set ``operator_id``. The
documented token has no ``exp``; ``exp`` and ``nbf`` are checked when present.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.types import Options
from pydantic import Field, field_validator

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal, SingleUse
from receiver.auth.material import KeyFile, LiveKey, as_key_files, load_public_keys
from receiver.auth.tokens import SIGNATURE_ONLY, numeric_claim
from receiver.errors import (
    ConfigError,
    InvalidTokenError,
    ReplayedRequestError,
    TokenExpiredError,
    TokenNotYetValidError,
    TokenTooOldError,
)

log = logging.getLogger("receiver.auth")

ALGORITHM = "RS256"
FUNK_SUBJECT = "funk.soracom.io"
_MIN_RSA_BITS = 2048
# PyJWT checks the signature only: the clock is the request's, and the claims are ours.
_SIGNATURE_ONLY: Options = {**SIGNATURE_ONLY, "enforce_minimum_key_length": True}
# The principal's name: the most specific device identity in `ctx`.
_NAME_CLAIMS = ("imsi", "simId", "resourceId", "imei")
# What the token proves of the device, as the identity headers Beam would have added.
_PROVEN_HEADERS = {"imsi": "x-soracom-imsi", "simId": "x-soracom-sim-id", "imei": "x-soracom-imei"}


class SoracomFunkAuthSettings(MethodSettings):
    """Soracom Funk's ``x-soracom-token``: an RS256 JWT whose ``kid`` picks the public key."""

    type: Literal["soracom_funk"]
    public_keys: list[KeyFile] = Field(min_length=1, description="Soracom's signing keys, each with its kid")
    issuer: str = "https://soracom.io"
    operator_id: str = Field(
        min_length=1, description="your Soracom operator id; tokens must carry it as `ctx.operatorId`"
    )
    max_age_seconds: int = Field(default=300, gt=0, description="oldest accepted `iat` (Funk signs each request)")
    leeway_seconds: int = Field(default=30, ge=0, le=300)

    _paths = field_validator("public_keys", mode="before")(as_key_files)


class SoracomFunkVerifier:
    """Verifies ``x-soracom-token`` for one source."""

    method = "soracom_funk"
    challenge: str | None = None
    credential_headers = frozenset({"x-soracom-token"})

    def __init__(
        self,
        keys: Sequence[LiveKey],
        *,
        issuer: str,
        operator_id: str | None,
        leeway_seconds: int,
        max_age_seconds: int = 300,
    ) -> None:
        self._keys = list(keys)
        self._issuer = issuer
        self._operator_id = operator_id
        self._leeway = leeway_seconds
        self._max_age = max_age_seconds
        self._decoder = jwt.PyJWT()

    @classmethod
    def from_settings(cls, settings: SoracomFunkAuthSettings, default_subject: str | None = None) -> Self:
        del default_subject
        keys = load_public_keys(settings.public_keys)
        problems = [
            f"public_keys.{index}: {spec.path} is not an RSA key of {_MIN_RSA_BITS} bits or more (Funk signs RS256)"
            for index, (spec, key) in enumerate(zip(settings.public_keys, keys, strict=True))
            if not isinstance(key.key, rsa.RSAPublicKey) or key.key.key_size < _MIN_RSA_BITS
        ]
        if problems:
            raise ConfigError(problems)
        return cls(
            keys,
            issuer=settings.issuer,
            operator_id=settings.operator_id,
            leeway_seconds=settings.leeway_seconds,
            max_age_seconds=settings.max_age_seconds,
        )

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        return self.method, {"type": "apiKey", "in": "header", "name": "X-Soracom-Token"}

    def offload(self, credentials: Credentials) -> bool:
        del credentials
        return False  # no check here is slow enough to leave the event loop

    def is_costly(self, credentials: Credentials) -> bool:
        del credentials
        return False  # hashes and MACs: cheap enough to check for a blocked address too

    def carries(self, credentials: Credentials) -> bool:
        return credentials.header("x-soracom-token") is not None

    def verify(self, credentials: Credentials) -> Principal:
        token = (credentials.header("x-soracom-token") or "").strip()
        if not token:
            raise InvalidTokenError("the x-soracom-token header is missing; route the device through Soracom Funk")
        key, claims = self._verify_signature(token, credentials.now)
        self._check_claims(claims, credentials.now)
        ctx = claims.get("ctx")
        context: Mapping[str, Any] = ctx if isinstance(ctx, Mapping) else {}
        name = next((str(context[c]) for c in _NAME_CLAIMS if context.get(c)), FUNK_SUBJECT)
        once = self._single_use_of(claims, credentials)
        proven = {header: str(context[claim]) for claim, header in _PROVEN_HEADERS.items() if context.get(claim)}
        return Principal(
            method=self.method,
            name=name,
            key_id=key.id,
            claims=claims,
            proven=proven,
            single_use=once,
            devices=frozenset(proven.values()),
        )

    def _single_use_of(self, claims: Mapping[str, Any], credentials: Credentials) -> SingleUse | None:
        """A token's ``jti`` is used for one request, for as long as its ``iat`` keeps it acceptable."""
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return None  # the documented token carries a jti; without one only the age rule applies
        now = credentials.now
        until = float(claims.get("iat", now)) + self._max_age + self._leeway
        replayed = "this x-soracom-token (jti) was already used for another request"
        return SingleUse(jti, until, replayed)

    def expiries(self) -> Iterable[Expiry]:
        return [Expiry(self.method, k.id, k.not_after) for k in self._keys if k.not_after is not None]

    def _verify_signature(self, token: str, now: float) -> tuple[LiveKey, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError("the x-soracom-token is not a well-formed JWT") from exc
        if header.get("alg") != ALGORITHM:
            msg = f"the x-soracom-token must be signed with {ALGORITHM}"
            raise InvalidTokenError(msg)
        kid = header.get("kid")
        candidates = [k for k in self._keys if k.id == kid]  # a kid is public: no need to hide it
        if not candidates:
            msg = "the x-soracom-token's kid names no configured Soracom public key; add that key file"
            raise InvalidTokenError(msg)
        for key in candidates:
            if not key.usable(now):
                continue
            try:
                claims: dict[str, Any] = self._decoder.decode(
                    token, key.key, algorithms=[ALGORITHM], options=_SIGNATURE_ONLY
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as exc:
                log.info("receiver.token_rejected", extra={"method": "soracom_funk", "error": type(exc).__name__})
                raise InvalidTokenError("the x-soracom-token could not be decoded as a signed JWT") from exc
            return key, claims
        raise InvalidTokenError("the x-soracom-token's signature does not verify with an unexpired Soracom key")

    def _check_claims(self, claims: Mapping[str, Any], now: float) -> None:
        """Raise for the first claim that does not hold; time rules allow the leeway."""
        if claims.get("iss") != self._issuer:
            msg = f"the x-soracom-token's iss is not {self._issuer}"
            raise InvalidTokenError(msg)
        if claims.get("sub") != FUNK_SUBJECT:
            msg = f"the x-soracom-token's sub is not {FUNK_SUBJECT}; only Funk tokens are accepted"
            raise InvalidTokenError(msg)
        if self._operator_id is not None:
            ctx = claims.get("ctx")
            operator = ctx.get("operatorId") if isinstance(ctx, Mapping) else None
            if not isinstance(operator, str) or not hmac.compare_digest(operator.encode(), self._operator_id.encode()):
                raise InvalidTokenError("the x-soracom-token's ctx.operatorId is not the operator this source accepts")
        iat = numeric_claim(claims, "iat")
        nbf = numeric_claim(claims, "nbf")
        exp = numeric_claim(claims, "exp")
        if iat is None:
            raise InvalidTokenError("the x-soracom-token has no iat claim")
        if iat > now + self._leeway or (nbf is not None and nbf > now + self._leeway):
            msg = "the x-soracom-token is not valid yet (iat or nbf lies in the future); check the clocks"
            raise TokenNotYetValidError(msg)
        if exp is not None and now > exp + self._leeway:
            raise TokenExpiredError("the x-soracom-token has expired (exp has passed); send a fresh request")
        if now - iat > self._max_age + self._leeway:
            msg = f"the x-soracom-token was issued more than {self._max_age} s ago; send a fresh request"
            raise TokenTooOldError(msg)


METHOD = Method(
    name=SoracomFunkVerifier.method,
    settings=SoracomFunkAuthSettings,
    build=SoracomFunkVerifier.from_settings,
    codes=frozenset(
        {InvalidTokenError, TokenExpiredError, TokenNotYetValidError, TokenTooOldError, ReplayedRequestError}
    ),
    credential_headers=SoracomFunkVerifier.credential_headers,
)
