"""Static bearer tokens, kept only as SHA-256 digests and compared in constant time.

The token a request carries is hashed and compared with every configured digest, so
the time taken does not depend on which (if any) matched. Several tokens live at once
for rotation; each may carry a ``not_after``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from receiver.auth.material import LiveSecret, first_match
from receiver.auth.principal import Credentials, Expiry, Principal
from receiver.auth_settings import BearerAuthSettings, read_secret
from receiver.errors import ConfigError, InvalidCredentialsError


class BearerVerifier:
    method = "bearer"
    challenge = 'Bearer realm="receiver"'

    def __init__(self, digests: list[LiveSecret]) -> None:
        self._digests = digests

    @classmethod
    def from_settings(cls, settings: BearerAuthSettings) -> BearerVerifier:
        digests = []
        for index, token in enumerate(settings.tokens):
            if token.sha256 is not None:
                digest = bytes.fromhex(token.sha256)
            else:
                assert token.file is not None
                try:
                    value = read_secret(token.file).get_secret_value()
                except ValueError as exc:
                    raise ConfigError([f"tokens.{index}: {exc}"]) from exc
                digest = hashlib.sha256(value.encode()).digest()
            not_after = None if token.not_after is None else token.not_after.timestamp()
            digests.append(LiveSecret(token.id or f"tokens.{index}", digest, not_after))
        return cls(digests)

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
