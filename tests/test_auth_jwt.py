"""JWT verification: algorithm allow-list, keys, subject and the time rules, without a broker."""

from __future__ import annotations

import time
from typing import Any

import pytest

from receiver.auth.base import Credentials
from receiver.auth.jwt import JwtAuthSettings, JwtVerifier, TimePolicy
from receiver.auth.material import KeyFile, load_public_keys
from receiver.errors import (
    ConfigError,
    InvalidTokenError,
    SubjectMismatchError,
    TokenExpiredError,
    TokenLifetimeExceededError,
    TokenNotYetValidError,
    TokenTooOldError,
)
from tests.conftest import DOMAIN, KeyPair, claims, hs256_with_public_key, unsigned_token

NOW = 1_800_000_000.0
POLICY = TimePolicy()


def at(iat: float, exp: float | None = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"sub": DOMAIN, "iat": iat, **extra}
    if exp is not None:
        result["exp"] = exp
    return result


@pytest.mark.parametrize(
    ("token_claims", "error"),
    [
        pytest.param(at(NOW - 3600), None, id="iat-exactly-1h"),
        pytest.param(at(NOW - 3600 - 31), TokenTooOldError, id="iat-past-1h-and-leeway"),
        pytest.param(at(NOW + 30), None, id="iat-within-leeway"),
        pytest.param(at(NOW + 31), TokenNotYetValidError, id="iat-future"),
        pytest.param(at(NOW, nbf=NOW + 120), TokenNotYetValidError, id="nbf-future"),
        pytest.param(at(NOW, NOW + 5400), None, id="lifetime-exactly-90-min"),
        pytest.param(at(NOW, NOW + 5401), TokenLifetimeExceededError, id="lifetime-over-90-min"),
        pytest.param(at(NOW - 100, NOW - 31), TokenExpiredError, id="expired"),
        pytest.param(at(NOW - 100, NOW - 10), None, id="expired-within-leeway"),
        pytest.param({"sub": DOMAIN}, InvalidTokenError, id="no-iat"),
        pytest.param(at("yesterday"), InvalidTokenError, id="iat-not-a-number"),  # type: ignore[arg-type]
        pytest.param(at(True), InvalidTokenError, id="iat-bool"),
    ],
)
def test_time_policy(token_claims: dict[str, Any], error: type[Exception] | None) -> None:
    """The iotcomms defaults: iat at most 1 h old, exp at most 90 min after iat, 30 s leeway."""
    if error is None:
        POLICY.check(token_claims, NOW)
    else:
        with pytest.raises(error) as caught:
            POLICY.check(token_claims, NOW)
        assert type(caught.value) is error


def test_time_policy_can_require_exp() -> None:
    """A source that requires ``exp`` refuses tokens without one."""
    with pytest.raises(InvalidTokenError, match="exp"):
        TimePolicy(require_exp=True).check(at(NOW), NOW)


def bearer(token: str, now: float | None = None) -> Credentials:
    """A request carrying ``Authorization: Bearer <token>`` at ``now``."""
    return Credentials({b"authorization": f"Bearer {token}".encode()}, b"", time.time() if now is None else now)


def verifier(key: KeyPair, algorithms: list[str] | None = None, subject: str | None = DOMAIN) -> JwtVerifier:
    settings = JwtAuthSettings(
        type="jwt", algorithms=algorithms or ["RS256"], public_keys=[KeyFile(path=key.public_path)]
    )
    return JwtVerifier.from_settings(settings, subject)


def test_valid_token_yields_principal(tenant_key: KeyPair) -> None:
    """A correctly signed token gives the ``sub`` as principal name."""
    principal = verifier(tenant_key).verify(bearer(tenant_key.token(claims())))
    assert principal.method == "jwt"
    assert principal.name == DOMAIN


def test_cached_token_still_expires(tenant_key: KeyPair) -> None:
    """A token verified once is re-checked against the clock on every later use."""
    v = verifier(tenant_key)
    token = tenant_key.token(claims(ttl=60))
    now = time.time()
    v.verify(bearer(token, now))
    v.verify(bearer(token, now + 60))
    with pytest.raises(TokenExpiredError):
        v.verify(bearer(token, now + 120))


def test_cache_does_not_skip_signature_for_other_tokens(tenant_key: KeyPair, other_key: KeyPair) -> None:
    """After a good token is cached, a forged one is still verified and refused."""
    v = verifier(tenant_key)
    v.verify(bearer(tenant_key.token(claims())))
    with pytest.raises(InvalidTokenError, match="signature"):
        v.verify(bearer(other_key.token(claims())))


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda k: unsigned_token(claims()), id="alg-none"),
        pytest.param(lambda k: hs256_with_public_key(k, claims()), id="hs256-public-key"),
        pytest.param(lambda k: k.token(claims(), alg="RS512"), id="alg-not-in-allow-list"),
    ],
)
def test_algorithm_comes_from_config_not_token(tenant_key: KeyPair, forge: Any) -> None:
    """Only the configured algorithms verify; the token's header cannot choose another."""
    with pytest.raises(InvalidTokenError, match="algorithm"):
        verifier(tenant_key).verify(bearer(forge(tenant_key)))


def test_subject_must_be_the_domain(tenant_key: KeyPair) -> None:
    """``sub`` of another domain is refused even with a good signature."""
    with pytest.raises(SubjectMismatchError):
        verifier(tenant_key).verify(bearer(tenant_key.token(claims(sub="evil.example"))))


def test_es256_key(ec_key: KeyPair) -> None:
    """EC keys verify ES256 tokens when the source allows ES256."""
    principal = verifier(ec_key, ["ES256"]).verify(bearer(ec_key.token(claims(), alg="ES256")))
    assert principal.name == DOMAIN


def test_algorithm_without_matching_key_is_a_config_error(tenant_key: KeyPair) -> None:
    """Allowing ES256 with only an RSA key is caught at startup, not at the first request."""
    with pytest.raises(ConfigError, match="ES256"):
        verifier(tenant_key, ["ES256"])


def test_unreadable_key_file_is_a_config_error(tmp_path: Any) -> None:
    """A missing or non-PEM key file names the file in the config problem."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match=r"public_keys\.0: .*bad\.pem is not a PEM public key"):
        load_public_keys([KeyFile(path=bad)])
    with pytest.raises(ConfigError, match="cannot read"):
        load_public_keys([KeyFile(path=tmp_path / "missing.pem")])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("iat", float("nan"), id="iat-nan"),
        pytest.param("exp", float("nan"), id="exp-nan"),
        pytest.param("iat", float("-inf"), id="iat-minus-infinity"),
        pytest.param("exp", float("inf"), id="exp-infinity"),
    ],
)
def test_a_time_claim_that_is_not_finite_is_refused(tenant_key: KeyPair, name: str, value: float) -> None:
    """A signed token with ``iat`` or ``exp`` NaN or infinite is refused: NaN passes every age rule (was: accepted)."""
    token = tenant_key.token({**claims(), name: value})  # PyJWT writes NaN / Infinity, and reads them back
    with pytest.raises(InvalidTokenError):
        verifier(tenant_key).verify(bearer(token))


def test_a_jti_is_remembered_for_the_tokens_whole_life() -> None:
    """A token valid for two days keeps its ``jti`` for two days, not 24 h (was: replayable on day two)."""
    policy = TimePolicy(max_age=None, max_lifetime=None, require_exp=True)
    two_days = 2 * 86400
    assert policy.valid_until(at(NOW, NOW + two_days)) == NOW + two_days + policy.leeway


def test_replayed_jti_needs_tokens_with_an_end(tenant_key: KeyPair) -> None:
    """``reject_replayed_jti`` where a token may have no end (no exp required, no age limit) fails at load."""
    settings = JwtAuthSettings(
        type="jwt",
        public_keys=[KeyFile(path=tenant_key.public_path)],
        reject_replayed_jti=True,
        max_age_seconds=None,
    )
    with pytest.raises(ConfigError, match="reject_replayed_jti"):
        JwtVerifier.from_settings(settings, DOMAIN)
    JwtVerifier.from_settings(settings.model_copy(update={"require_exp": True}), DOMAIN)  # with exp: taken
