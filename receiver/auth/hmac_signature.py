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
from typing import Any, Literal, Self

from pydantic import Field

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal
from receiver.auth.material import LiveSecret, Secret, first_match, load_secrets
from receiver.errors import InvalidSignatureError

_DIGEST_SIZE = hashlib.sha256().digest_size
DEFAULT_HEADER = "X-Hub-Signature-256"


class HmacAuthSettings(MethodSettings):
    """An HMAC-SHA256 of the raw body in one header (GitHub's ``X-Hub-Signature-256: sha256=<hex>``)."""

    type: Literal["hmac"]
    header: str = Field(default=DEFAULT_HEADER, pattern=r"^[A-Za-z0-9-]{1,64}$")
    prefix: str = "sha256="
    encoding: Literal["hex", "base64"] = "hex"
    secrets: list[Secret] = Field(min_length=1)


class HmacVerifier:
    """Verifies ``<header>: <prefix><mac>`` for one source; several secrets may be live at once."""

    method = "hmac"
    challenge: str | None = None

    def __init__(
        self,
        secrets: Sequence[LiveSecret],
        *,
        header: str = DEFAULT_HEADER,
        prefix: str = "sha256=",
        encoding: Literal["hex", "base64"] = "hex",
    ) -> None:
        self._secrets = list(secrets)
        self._header = header
        self._prefix = prefix
        self._encoding = encoding
        self.credential_headers = frozenset({header.lower()})

    @classmethod
    def from_settings(cls, settings: HmacAuthSettings, default_subject: str | None = None) -> Self:
        del default_subject
        secrets = load_secrets(settings.secrets)
        return cls(secrets, header=settings.header, prefix=settings.prefix, encoding=settings.encoding)

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        """Named after the configured header when it is not the default, so sources can differ."""
        name = self.method if self._header == DEFAULT_HEADER else f"{self.method}-{self._header.lower()}"
        return name, {"type": "apiKey", "in": "header", "name": self._header}

    def offload(self, credentials: Credentials) -> bool:
        del credentials
        return False  # no check here is slow enough to leave the event loop

    def is_costly(self, credentials: Credentials) -> bool:
        del credentials
        return False  # hashes and MACs: cheap enough to check for a blocked address too

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


METHOD = Method(
    name=HmacVerifier.method,
    settings=HmacAuthSettings,
    build=HmacVerifier.from_settings,
    codes=frozenset({InvalidSignatureError}),
    credential_headers=frozenset({DEFAULT_HEADER.lower()}),
    signs_only_body=True,
)
