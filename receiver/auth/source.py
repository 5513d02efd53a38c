"""One source's authentication: its verifiers, the one chosen by the credential a request carries."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from receiver.auth.basic import BasicVerifier
from receiver.auth.bearer import BearerVerifier
from receiver.auth.hmac_signature import HmacVerifier
from receiver.auth.jwt import JwtVerifier
from receiver.auth.principal import Credentials, Expiry, Principal, Verifier
from receiver.auth.soracom_beam import SoracomBeamVerifier
from receiver.auth.soracom_funk import SoracomFunkVerifier
from receiver.auth.standard_webhooks import StandardWebhooksVerifier
from receiver.auth_settings import (
    BasicAuthSettings,
    BearerAuthSettings,
    HmacAuthSettings,
    JwtAuthSettings,
    SoracomBeamAuthSettings,
    SoracomFunkAuthSettings,
    StandardWebhooksAuthSettings,
)
from receiver.errors import AuthError, AuthRequiredError, ConfigError
from receiver.settings import SourceSettings

Builder = Callable[[Any, str | None], Verifier]

BUILDERS: dict[type[Any], Builder] = {
    JwtAuthSettings: JwtVerifier.from_settings,
    BearerAuthSettings: lambda s, _domain: BearerVerifier.from_settings(s),
    BasicAuthSettings: lambda s, _domain: BasicVerifier.from_settings(s),
    SoracomBeamAuthSettings: lambda s, _domain: SoracomBeamVerifier.from_settings(s),
    SoracomFunkAuthSettings: lambda s, _domain: SoracomFunkVerifier.from_settings(s),
    StandardWebhooksAuthSettings: lambda s, _domain: StandardWebhooksVerifier.from_settings(s),
    HmacAuthSettings: lambda s, _domain: HmacVerifier.from_settings(s),
}


class SourceAuth:
    """Authenticates requests for one source with the verifiers it was configured with."""

    def __init__(self, verifiers: Sequence[Verifier]) -> None:
        self._verifiers = list(verifiers)
        self._challenges = [v.challenge for v in self._verifiers if v.challenge]

    def authenticate(self, credentials: Credentials) -> Principal:
        """The credential the request carries decides the one method tried: no falling through."""
        verifier = self._choose(credentials)
        if verifier is None:
            accepted = ", ".join(sorted({v.method for v in self._verifiers}))
            msg = f"this source needs credentials; it accepts: {accepted}"
            raise AuthRequiredError(msg, self._challenges)
        try:
            return verifier.verify(credentials)
        except AuthError as exc:
            if verifier.challenge and type(exc).challenge == AuthError.challenge:
                exc.challenge = verifier.challenge
            raise

    def _choose(self, credentials: Credentials) -> Verifier | None:
        candidates = [v for v in self._verifiers if v.carries(credentials)]
        if len(candidates) > 1:
            # JWTs and static tokens share the Bearer scheme: a JWT-shaped token goes to
            # the JWT verifier, anything else to the static tokens.
            authorization = credentials.authorization()
            shaped = authorization is not None and authorization[1].count(".") == 2
            candidates.sort(key=lambda v: v.method != ("jwt" if shaped else "bearer"))
        return candidates[0] if candidates else None

    def expiries(self) -> Iterable[Expiry]:
        for verifier in self._verifiers:
            yield from verifier.expiries()


def build_source_auth(settings: SourceSettings) -> SourceAuth:
    """Build the verifiers of a source, parsing keys and reading secrets now, once."""
    verifiers: list[Verifier] = []
    problems: list[str] = []
    for index, method in enumerate(settings.auth):
        try:
            verifiers.append(BUILDERS[type(method)](method, settings.domain))
        except ConfigError as exc:
            problems.extend(f"auth.{index}.{p}" for p in exc.problems)
    methods = [v.method for v in verifiers]
    duplicates = sorted({m for m in methods if methods.count(m) > 1})
    if duplicates:
        problems.append(f"auth: each method at most once per source; {', '.join(duplicates)} is repeated")
    if problems:
        raise ConfigError(problems)
    return SourceAuth(verifiers)
