"""Static bearer tokens, kept only as SHA-256 digests and compared in constant time.

The token a request carries is hashed and compared with every configured digest, so
the time taken does not depend on which (if any) matched. Several tokens live at once
for rotation; each may carry a ``not_after``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal
from receiver.auth.material import LiveSecret, first_match, read_secret
from receiver.errors import ConfigError, InvalidCredentialsError


class BearerToken(BaseModel):
    """A static bearer token, kept as its SHA-256 digest or read from a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="hex digest of the token")
    file: Path | None = None
    id: str | None = None
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BearerToken:
        if (self.sha256 is None) == (self.file is None):
            raise ValueError("give exactly one of sha256 or file")
        return self


class BearerAuthSettings(MethodSettings):
    """Static ``Authorization: Bearer`` tokens (several live at once for rotation)."""

    type: Literal["bearer"]
    tokens: list[BearerToken] = Field(min_length=1)


class BearerVerifier:
    method = "bearer"
    challenge = 'Bearer realm="receiver"'
    credential_headers = frozenset({"authorization"})

    def __init__(self, digests: list[LiveSecret]) -> None:
        self._digests = digests

    @classmethod
    def from_settings(cls, settings: BearerAuthSettings, default_subject: str | None = None) -> BearerVerifier:
        del default_subject
        digests = []
        for index, token in enumerate(settings.tokens):
            if token.sha256 is not None:
                digest = bytes.fromhex(token.sha256)
            elif token.file is not None:
                try:
                    value = read_secret(token.file).get_secret_value()
                except ValueError as exc:
                    raise ConfigError([f"tokens.{index}: {exc}"]) from exc
                digest = hashlib.sha256(value.encode()).digest()
            else:
                raise ConfigError([f"tokens.{index}: give exactly one of sha256 or file"])
            not_after = None if token.not_after is None else token.not_after.timestamp()
            digests.append(LiveSecret(token.id or f"tokens.{index}", digest, not_after))
        return cls(digests)

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        return self.method, {"type": "http", "scheme": "bearer"}

    def offload(self, credentials: Credentials) -> bool:
        del credentials
        return False  # no check here is slow enough to leave the event loop

    def is_costly(self, credentials: Credentials) -> bool:
        del credentials
        return False  # hashes and MACs: cheap enough to check for a blocked address too

    def carries(self, credentials: Credentials) -> bool:
        authorization = credentials.authorization()
        return authorization is not None and authorization[0] == "bearer"

    def expiries(self) -> Iterable[Expiry]:
        for digest in self._digests:
            if digest.not_after is not None:
                yield Expiry(self.method, digest.id, digest.not_after)

    def verify(self, credentials: Credentials) -> Principal:
        authorization = credentials.authorization()
        presented = hashlib.sha256((authorization[1] if authorization else "").encode()).digest()
        matched = first_match(self._digests, credentials.now, lambda digest: hmac.compare_digest(presented, digest))
        if matched is None:
            raise InvalidCredentialsError("the bearer token is not one this source accepts")
        return Principal(method=self.method, name=matched.id, key_id=matched.id)


METHOD = Method(
    name=BearerVerifier.method,
    settings=BearerAuthSettings,
    build=BearerVerifier.from_settings,
    codes=frozenset({InvalidCredentialsError}),
    credential_headers=BearerVerifier.credential_headers,
)
