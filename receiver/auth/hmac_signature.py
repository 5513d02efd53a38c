"""An HMAC-SHA256 of the raw body in one header, as GitHub sends ``X-Hub-Signature-256``.

The header holds a fixed prefix and the MAC, hex or base64 (GitHub:
``sha256=<hex of HMAC-SHA256(secret, body)>``). The MAC covers the body only: there is no
timestamp and no delivery id under it, so this method cannot tell a replayed request
from a new one and refuses none. Use it only where the sender offers nothing better,
and keep the rest of the path idempotent.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from base64 import b64decode
from collections.abc import Iterable, Sequence
from typing import Literal, Self

from receiver.auth.material import LiveSecret, first_match, load_secrets
from receiver.auth.principal import Credentials, Expiry, Principal
from receiver.auth_settings import HmacAuthSettings
from receiver.errors import InvalidSignatureError

_DIGEST_SIZE = hashlib.sha256().digest_size


class HmacVerifier:
    """Verifies ``<header>: <prefix><mac>`` for one source; several secrets may be live at once."""

    challenge: str | None = None

    def __init__(
        self,
        method: str,
        secrets: Sequence[LiveSecret],
        *,
        header: str,
        prefix: str,
        encoding: Literal["hex", "base64"],
    ) -> None:
        self.method = method
        self._secrets = list(secrets)
        self._header = header
        self._prefix = prefix
        self._encoding = encoding

    @classmethod
    def from_settings(cls, settings: HmacAuthSettings) -> Self:
        secrets = load_secrets(settings.secrets)
        return cls(settings.type, secrets, header=settings.header, prefix=settings.prefix, encoding=settings.encoding)

    def carries(self, credentials: Credentials) -> bool:
        return credentials.header(self._header) is not None

    def verify(self, credentials: Credentials) -> Principal:
        given = self._mac(credentials)
        body = credentials.body
        found = first_match(
            self._secrets,
            credentials.now,
            lambda secret: hmac.compare_digest(hmac.digest(secret, body, "sha256"), given),
        )
        if found is None:
            msg = f"the {self._header} signature does not match the body; check the shared secret"
            raise InvalidSignatureError(msg)
        return Principal(method=self.method, name=found.id, key_id=found.id)

    def expiries(self) -> Iterable[Expiry]:
        return [Expiry(self.method, s.id, s.not_after) for s in self._secrets if s.not_after is not None]

    def _mac(self, credentials: Credentials) -> bytes:
        value = credentials.header(self._header)
        if value is None:
            msg = f"the {self._header} header is missing; configure the sender to sign"
            raise InvalidSignatureError(msg)
        value = value.strip()
        malformed = f"the {self._header} header is malformed; expected {self._prefix}<{self._encoding} HMAC-SHA256>"
        if not value.startswith(self._prefix):
            raise InvalidSignatureError(malformed)
        encoded = value[len(self._prefix) :]
        try:
            mac = bytes.fromhex(encoded) if self._encoding == "hex" else b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidSignatureError(malformed) from exc
        if len(mac) != _DIGEST_SIZE:
            raise InvalidSignatureError(malformed)
        return mac
