"""HTTP Basic credentials, compared in constant time.

Both the username and the password are compared as SHA-256 digests with
``hmac.compare_digest``, and both comparisons always run, so neither the length nor
the first differing byte of a guess shows in the response time.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from base64 import b64decode

from pydantic import SecretStr

from receiver.auth.principal import Principal
from receiver.errors import InvalidCredentialsError


def _digest(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).digest()


class BasicVerifier:
    """Verifies ``Authorization: Basic <base64(user:password)>`` for one source."""

    scheme = "basic"
    challenge = 'Basic realm="receiver", charset="UTF-8"'

    def __init__(self, username: str, password: SecretStr) -> None:
        self._username = username
        self._user_digest = _digest(username)
        self._password_digest = _digest(password.get_secret_value())

    def verify(self, credentials: str, now: float) -> Principal:
        del now  # Basic credentials carry no time
        try:
            decoded = b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCredentialsError("the Basic credentials are not valid base64") from exc
        user, sep, password = decoded.partition(b":")
        if not sep:
            raise InvalidCredentialsError("the Basic credentials must be base64 of 'username:password'")
        user_ok = hmac.compare_digest(_digest(user), self._user_digest)
        password_ok = hmac.compare_digest(_digest(password), self._password_digest)
        if not (user_ok & password_ok):
            raise InvalidCredentialsError("the Basic username or password is wrong")
        return Principal(method="basic", name=self._username)
