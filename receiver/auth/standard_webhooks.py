"""Standard Webhooks signatures (symmetric ``v1``: HMAC-SHA256), per standardwebhooks.com.

The sender signs ``{webhook-id}.{webhook-timestamp}.{raw body}`` with the secret's bytes
(the base64 after ``whsec_``) and sends ``webhook-signature: v1,<base64> ...``, a
space-separated list so that it can sign with an old and a new secret during a
rotation. Entries of other versions (``v1a`` is the asymmetric one) are ignored.

The timestamp must lie within the tolerance either way, and a ``webhook-id`` is accepted
once until its timestamp leaves the tolerance. Senders keep the id when they retry but
re-sign with a new timestamp: a retry within the tolerance (after a 503 from us, say)
is refused as a replay, and the next one, minutes later by the spec's schedule, passes.
"""

from __future__ import annotations

import binascii
import hmac
import re
from base64 import b64decode
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal, Self

from pydantic import Field

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal, SingleUse
from receiver.auth.material import LiveSecret, Secret, first_match, load_secrets
from receiver.errors import ConfigError, InvalidSignatureError, ReplayedRequestError, SignatureExpiredError

SECRET_PREFIX = b"whsec_"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE_SIZE = 32


class StandardWebhooksAuthSettings(MethodSettings):
    """Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (v1, HMAC-SHA256)."""

    type: Literal["standard_webhooks"]
    secrets: list[Secret] = Field(min_length=1, description="`whsec_...` secrets")
    tolerance_seconds: int = Field(default=300, gt=0)


def decode_secret(value: bytes) -> bytes:
    """The HMAC key in a ``whsec_<base64>`` secret; the prefix is optional, padding too."""
    encoded = value.removeprefix(SECRET_PREFIX)
    key = b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    if not key:
        raise ValueError("empty")
    return key


class StandardWebhooksVerifier:
    """Verifies ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for one source."""

    method = "standard_webhooks"
    challenge: str | None = None
    credential_headers = frozenset({"webhook-signature"})

    def __init__(self, keys: Sequence[LiveSecret], tolerance_seconds: int) -> None:
        """``keys`` hold the decoded HMAC keys, not the ``whsec_`` strings."""
        self._keys = list(keys)
        self._tolerance = tolerance_seconds

    @classmethod
    def from_settings(cls, settings: StandardWebhooksAuthSettings, default_subject: str | None = None) -> Self:
        del default_subject
        secrets = load_secrets(settings.secrets)
        keys = [replace(secret, value=_decoded(secret, index)) for index, secret in enumerate(secrets)]
        return cls(keys, settings.tolerance_seconds)

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        return self.method, {"type": "apiKey", "in": "header", "name": "webhook-signature"}

    def offload(self, credentials: Credentials) -> bool:
        del credentials
        return False  # no check here is slow enough to leave the event loop

    def is_costly(self, credentials: Credentials) -> bool:
        del credentials
        return False  # hashes and MACs: cheap enough to check for a blocked address too

    def carries(self, credentials: Credentials) -> bool:
        names = ("webhook-signature", "webhook-id", "webhook-timestamp")
        return any(credentials.header(n) is not None for n in names)

    def verify(self, credentials: Credentials) -> Principal:
        msg_id = _required(credentials, "webhook-id")
        timestamp = _required(credentials, "webhook-timestamp")
        signatures = _v1_signatures(_required(credentials, "webhook-signature"))
        if not _TIMESTAMP.fullmatch(timestamp):
            raise InvalidSignatureError("the webhook-timestamp header is malformed; expected Unix seconds")
        signed = f"{msg_id}.{timestamp}.".encode("latin-1") + credentials.body
        key = first_match(
            self._keys,
            credentials.now,
            lambda secret: _any_equal(hmac.digest(secret, signed, "sha256"), signatures),
        )
        if key is None:
            raise InvalidSignatureError("no v1 webhook-signature matches; check the endpoint's whsec_ secret")
        signed_at = int(timestamp)
        if credentials.now - signed_at > self._tolerance:
            msg = f"the webhook-timestamp is more than {self._tolerance} s old; the sender must re-sign"
            raise SignatureExpiredError(msg)
        if signed_at - credentials.now > self._tolerance:
            msg = f"the webhook-timestamp is more than {self._tolerance} s in the future; check the clocks"
            raise SignatureExpiredError(msg)
        replayed = "this webhook-id was already used for another body; a webhook id names one delivery"
        once = SingleUse(msg_id, signed_at + self._tolerance, replayed)
        claims = {"webhook-id": msg_id, "webhook-timestamp": signed_at}
        return Principal(method=self.method, name=key.id, key_id=key.id, claims=claims, single_use=once)

    def expiries(self) -> Iterable[Expiry]:
        return [Expiry(self.method, k.id, k.not_after) for k in self._keys if k.not_after is not None]


def _any_equal(expected: bytes, signatures: Sequence[bytes]) -> bool:
    """Constant time over every v1 entry of the header."""
    equal = False
    for signature in signatures:
        equal |= hmac.compare_digest(expected, signature)
    return equal


def _decoded(secret: LiveSecret, index: int) -> bytes:
    try:
        return decode_secret(secret.value)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError([f"secrets.{index}: not a Standard Webhooks secret (whsec_ followed by base64)"]) from exc


def _required(credentials: Credentials, name: str) -> str:
    value = credentials.header(name)
    if value is None or not value.strip():
        msg = f"the {name} header is missing; the sender must follow Standard Webhooks"
        raise InvalidSignatureError(msg)
    return value.strip()


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` entries; entries of other versions, and malformed ones, are ignored.

    The spec's verifiers accept when any ``v1`` entry verifies, so a sender may list a
    signature we cannot read (a future scheme) beside one we can.
    """
    signatures = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if not comma or version != "v1":
            continue
        try:
            signature = b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(signature) == _SIGNATURE_SIZE:
            signatures.append(signature)
    if not signatures:
        msg = "the webhook-signature header has no well-formed v1 entry; expected space-separated v1,<base64> entries"
        raise InvalidSignatureError(msg)
    return signatures


METHOD = Method(
    name=StandardWebhooksVerifier.method,
    settings=StandardWebhooksAuthSettings,
    build=StandardWebhooksVerifier.from_settings,
    codes=frozenset({InvalidSignatureError, SignatureExpiredError, ReplayedRequestError}),
    credential_headers=StandardWebhooksVerifier.credential_headers,
    signs_only_body=True,
)
