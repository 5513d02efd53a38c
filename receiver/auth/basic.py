"""HTTP Basic credentials: an Argon2 hash (preferred) or a plain secret, compared in constant time.

Plain secrets are compared as SHA-256 digests with ``hmac.compare_digest``; username and
password comparisons both always run. Argon2 is deliberately slow, so a successful
verification is remembered (keyed by a digest of the exact credentials, never the
password itself) and repeated requests cost one hash lookup; failures are never
remembered and are rate limited per client address upstream.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import AwareDatetime, Field, SecretStr, model_validator

from receiver.auth.base import Credentials, Expiry, Method, MethodSettings, Principal
from receiver.auth.material import read_secret
from receiver.errors import ConfigError, InvalidCredentialsError

_HASHER = PasswordHasher()
_CACHE_SIZE = 1024


def hash_password(password: str) -> str:
    """An Argon2id hash with the library's current recommended parameters."""
    return _HASHER.hash(password)


class BasicAuthSettings(MethodSettings):
    """HTTP Basic credentials; the password as an Argon2 hash (preferred) or a plain secret."""

    type: Literal["basic"]
    username: str = Field(min_length=1)
    password_hash: str | None = Field(default=None, description="from `receiver hash-password`")
    password_hash_file: Path | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuthSettings:
        given = [self.password_hash, self.password_hash_file, self.password, self.password_file]
        if sum(v is not None for v in given) != 1:
            msg = "give exactly one of password_hash, password_hash_file, password or password_file"
            raise ValueError(msg)
        return self


def _read(field: str, path: Path) -> str:
    try:
        return read_secret(path).get_secret_value()
    except ValueError as exc:
        raise ConfigError([f"{field}: {exc}"]) from exc


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BasicVerifier:
    """Verifies ``Authorization: Basic <base64(user:password)>`` for one source."""

    method = "basic"
    challenge = 'Basic realm="receiver", charset="UTF-8"'
    credential_headers = frozenset({"authorization"})

    def __init__(
        self,
        username: str,
        *,
        password: str | None = None,
        password_hash: str | None = None,
        not_after: float | None = None,
    ) -> None:
        self._username = username
        self._user_digest = _digest(username.encode())
        self._password_digest = None if password is None else _digest(password.encode())
        self._hash = password_hash
        self._not_after = not_after
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: BasicAuthSettings, default_subject: str | None = None) -> BasicVerifier:
        del default_subject
        not_after = None if settings.not_after is None else settings.not_after.timestamp()
        if settings.password is not None:
            return cls(settings.username, password=settings.password.get_secret_value(), not_after=not_after)
        if settings.password_file is not None:
            password = _read("password_file", settings.password_file)
            return cls(settings.username, password=password, not_after=not_after)
        hashed = settings.password_hash
        if settings.password_hash_file is not None:
            hashed = _read("password_hash_file", settings.password_hash_file)
        if not hashed or not hashed.startswith("$argon2"):
            raise ConfigError(["password_hash: not an Argon2 hash; make one with `receiver hash-password`"])
        return cls(settings.username, password_hash=hashed, not_after=not_after)

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        return self.method, {"type": "http", "scheme": "basic"}

    def offload(self, credentials: Credentials) -> bool:
        """An Argon2 check not remembered takes ~50 ms of CPU: it runs off the event loop."""
        if self._hash is None:
            return False
        authorization = credentials.authorization()
        encoded = authorization[1] if authorization else ""
        try:
            decoded = b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        return _digest(b"basic\0" + decoded) not in self._verified

    def is_costly(self, credentials: Credentials) -> bool:
        return self.offload(credentials)  # an Argon2 check not remembered

    def carries(self, credentials: Credentials) -> bool:
        authorization = credentials.authorization()
        return authorization is not None and authorization[0] == "basic"

    def expiries(self) -> Iterable[Expiry]:
        if self._not_after is not None:
            yield Expiry(self.method, self._username, self._not_after)

    def verify(self, credentials: Credentials) -> Principal:
        authorization = credentials.authorization()
        encoded = authorization[1] if authorization else ""
        try:
            decoded = b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCredentialsError("the Basic credentials are not valid base64") from exc
        user, sep, password = decoded.partition(b":")
        if not sep:
            raise InvalidCredentialsError("the Basic credentials must be base64 of 'username:password'")
        if self._not_after is not None and credentials.now > self._not_after:
            raise InvalidCredentialsError("these Basic credentials have expired; ask for the new ones")
        user_ok = hmac.compare_digest(_digest(user), self._user_digest)
        if not (self._password_ok(decoded, password) & user_ok):
            raise InvalidCredentialsError("the Basic username or password is wrong")
        return Principal(method=self.method, name=self._username, key_id=self._username)

    def _password_ok(self, decoded: bytes, password: bytes) -> bool:
        if self._password_digest is not None:
            return hmac.compare_digest(_digest(password), self._password_digest)
        if self._hash is None:  # neither a plain password nor a hash: nothing matches
            return False
        remembered = _digest(b"basic\0" + decoded)
        if remembered in self._verified:
            return True
        try:
            _HASHER.verify(self._hash, password)
        except (VerificationError, InvalidHashError):
            return False
        self._verified[remembered] = None
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


METHOD = Method(
    name=BasicVerifier.method,
    settings=BasicAuthSettings,
    build=BasicVerifier.from_settings,
    codes=frozenset({InvalidCredentialsError}),
    credential_headers=BasicVerifier.credential_headers,
)
