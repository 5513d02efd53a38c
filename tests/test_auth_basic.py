"""Basic credentials and the choice of method by scheme."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from receiver.auth import BasicVerifier, SourceAuth
from receiver.errors import AuthRequiredError, InvalidCredentialsError


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


VERIFIER = BasicVerifier("iotcomms", SecretStr("pa:ss"))


def test_right_credentials() -> None:
    """The configured username and password (which may contain ':') are accepted."""
    assert VERIFIER.verify(basic("iotcomms", "pa:ss"), 0).name == "iotcomms"


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
def test_wrong_credentials(credentials: str) -> None:
    """Anything but the exact pair is refused with invalid_credentials."""
    with pytest.raises(InvalidCredentialsError):
        VERIFIER.verify(credentials, 0)


def test_scheme_selects_one_method() -> None:
    """A Bearer header is not tried as Basic; a missing header asks for credentials."""
    auth = SourceAuth([VERIFIER])
    with pytest.raises(AuthRequiredError) as caught:
        auth.authenticate(f"Bearer {basic('iotcomms', 'pa:ss')}", 0)
    assert "Basic" in caught.value.headers()["WWW-Authenticate"]
    with pytest.raises(AuthRequiredError):
        auth.authenticate(None, 0)
    assert auth.authenticate(f"basic {basic('iotcomms', 'pa:ss')}", 0).method == "basic"


def test_wrong_password_challenge_names_basic() -> None:
    """A failed Basic attempt is answered with a Basic challenge."""
    auth = SourceAuth([VERIFIER])
    with pytest.raises(InvalidCredentialsError) as caught:
        auth.authenticate(f"Basic {basic('iotcomms', 'nope')}", 0)
    assert caught.value.headers()["WWW-Authenticate"].startswith("Basic")
