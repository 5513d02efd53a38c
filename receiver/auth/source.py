"""One source's authentication: its verifiers, chosen by the scheme a request carries."""

from __future__ import annotations

from collections.abc import Sequence

from receiver.auth.basic import BasicVerifier
from receiver.auth.jwt import JwtVerifier
from receiver.auth.principal import Principal, Verifier
from receiver.errors import AuthError, AuthRequiredError, ConfigError, InvalidTokenError
from receiver.settings import BasicAuthSettings, JwtAuthSettings, SourceSettings


class SourceAuth:
    """Authenticates requests for one source with the verifiers it was configured with."""

    def __init__(self, verifiers: Sequence[Verifier]) -> None:
        self._by_scheme = {v.scheme: v for v in verifiers}
        self._challenges = [v.challenge for v in verifiers]

    def authenticate(self, authorization: str | None, now: float) -> Principal:
        """Verify the ``Authorization`` header; the scheme decides the one method tried."""
        if not authorization:
            msg = "this source needs credentials in the Authorization header"
            raise AuthRequiredError(msg, self._challenges)
        scheme, _, credentials = authorization.strip().partition(" ")
        verifier = self._by_scheme.get(scheme.lower())
        if verifier is None or not credentials.strip():
            accepted = " or ".join(v.scheme.capitalize() for v in self._by_scheme.values())
            msg = f"this source accepts {accepted} credentials in the Authorization header"
            raise AuthRequiredError(msg, self._challenges)
        try:
            return verifier.verify(credentials.strip(), now)
        except AuthError as exc:
            if not isinstance(exc, InvalidTokenError):  # those carry RFC 6750's error="invalid_token"
                exc.challenge = verifier.challenge
            raise


def build_source_auth(settings: SourceSettings) -> SourceAuth:
    """Build the verifiers of a source, parsing keys and reading secrets now, once."""
    verifiers: list[Verifier] = []
    problems: list[str] = []
    for index, method in enumerate(settings.auth):
        try:
            if isinstance(method, JwtAuthSettings):
                verifiers.append(JwtVerifier.from_settings(method, settings.domain))
            elif isinstance(method, BasicAuthSettings):
                verifiers.append(BasicVerifier(method.username, method.secret()))
        except ConfigError as exc:
            problems.extend(f"auth.{index}.{p}" for p in exc.problems)
        except ValueError as exc:
            problems.append(f"auth.{index}: {exc}")
    schemes = [v.scheme for v in verifiers]
    duplicates = sorted({s for s in schemes if schemes.count(s) > 1})
    if duplicates:
        problems.append(f"auth: only one method per scheme; {', '.join(duplicates)} is configured twice")
    if problems:
        raise ConfigError(problems)
    return SourceAuth(verifiers)
