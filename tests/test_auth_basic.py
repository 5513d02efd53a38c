"""Basic credentials (plain and Argon2), static bearer tokens, and the choice of method."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time

import pytest

from receiver.auth import Credentials, SourceAuth
from receiver.auth.basic import BasicAuthSettings, BasicVerifier, hash_password
from receiver.auth.bearer import BearerAuthSettings, BearerVerifier
from receiver.errors import AuthRequiredError, InvalidCredentialsError


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def request(authorization: str | None, now: float | None = None) -> Credentials:
    headers = {} if authorization is None else {b"authorization": authorization.encode()}
    return Credentials(headers, b"", time.time() if now is None else now)


PLAIN = BasicVerifier("iotcomms", password="pa:ss")
HASHED = BasicVerifier.from_settings(
    BasicAuthSettings(type="basic", username="iotcomms", password_hash=hash_password("pa:ss"))
)


@pytest.mark.parametrize("verifier", [pytest.param(PLAIN, id="plain"), pytest.param(HASHED, id="argon2")])
def test_right_credentials(verifier: BasicVerifier) -> None:
    """The configured username and password (which may contain ':') are accepted, twice (cache)."""
    assert verifier.verify(request(f"Basic {basic('iotcomms', 'pa:ss')}")).name == "iotcomms"
    assert verifier.verify(request(f"Basic {basic('iotcomms', 'pa:ss')}")).name == "iotcomms"


@pytest.mark.parametrize("verifier", [pytest.param(PLAIN, id="plain"), pytest.param(HASHED, id="argon2")])
@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(basic("iotcomms", "pa:sS"), id="wrong-password"),
        pytest.param(basic("iotcomm", "pa:ss"), id="wrong-user"),
        pytest.param(basic("iotcomms", ""), id="empty-password"),
        pytest.param(base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param("***", id="not-base64"),
    ],
)
def test_wrong_credentials(verifier: BasicVerifier, credentials: str) -> None:
    """Anything but the exact pair is refused with invalid_credentials, never echoing the password."""
    with pytest.raises(InvalidCredentialsError) as caught:
        verifier.verify(request(f"Basic {credentials}"))
    assert "pa:s" not in caught.value.message


def test_basic_not_after() -> None:
    """Basic credentials past their not_after are refused."""
    verifier = BasicVerifier("u", password="p", not_after=1000.0)
    assert verifier.verify(request(f"Basic {basic('u', 'p')}", now=999.0)).name == "u"
    with pytest.raises(InvalidCredentialsError, match="expired"):
        verifier.verify(request(f"Basic {basic('u', 'p')}", now=1001.0))


def test_hash_must_be_argon2() -> None:
    """A password_hash that is not Argon2 is a config error, caught at startup."""
    from receiver.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="hash-password"):
        BasicVerifier.from_settings(BasicAuthSettings(type="basic", username="u", password_hash="plain"))


def bearer_verifier() -> BearerVerifier:
    digest = hashlib.sha256(b"token-one").hexdigest()
    settings = BearerAuthSettings(
        type="bearer",
        tokens=[
            {"sha256": digest, "id": "one", "not_after": "2030-01-01T00:00:00Z"},
            {"sha256": hashlib.sha256(b"token-two").hexdigest(), "id": "two"},
        ],
    )
    return BearerVerifier.from_settings(settings)


def test_bearer_tokens_rotate_and_expire() -> None:
    """Each configured token works and names its id; one past not_after is refused."""
    verifier = bearer_verifier()
    assert verifier.verify(request("Bearer token-one", now=1.7e9)).key_id == "one"
    assert verifier.verify(request("Bearer token-two", now=1.7e9)).key_id == "two"
    with pytest.raises(InvalidCredentialsError):
        verifier.verify(request("Bearer token-one", now=1.95e9))
    with pytest.raises(InvalidCredentialsError):
        verifier.verify(request("Bearer token-three", now=1.7e9))
    assert [(e.key_id, e.method) for e in verifier.expiries()] == [("one", "bearer")]


def test_scheme_selects_one_method() -> None:
    """A Bearer header is not tried as Basic; a missing header asks for credentials."""
    auth = SourceAuth([PLAIN])
    with pytest.raises(AuthRequiredError) as caught:
        asyncio.run(auth.authenticate(request(f"Bearer {basic('iotcomms', 'pa:ss')}")))
    assert "Basic" in caught.value.headers()["WWW-Authenticate"]
    with pytest.raises(AuthRequiredError):
        asyncio.run(auth.authenticate(request(None)))
    assert asyncio.run(auth.authenticate(request(f"basic {basic('iotcomms', 'pa:ss')}"))).method == "basic"


def test_wrong_bearer_does_not_fall_through_to_basic() -> None:
    """With Bearer and Basic configured, a wrong Bearer token is refused as a bearer token."""
    auth = SourceAuth([PLAIN, bearer_verifier()])
    with pytest.raises(InvalidCredentialsError) as caught:
        asyncio.run(auth.authenticate(request("Bearer nope")))
    assert caught.value.headers()["WWW-Authenticate"].startswith("Bearer")


def test_wrong_password_challenge_names_basic() -> None:
    """A failed Basic attempt is answered with a Basic challenge."""
    auth = SourceAuth([PLAIN])
    with pytest.raises(InvalidCredentialsError) as caught:
        asyncio.run(auth.authenticate(request(f"Basic {basic('iotcomms', 'nope')}")))
    assert caught.value.headers()["WWW-Authenticate"].startswith("Basic")
