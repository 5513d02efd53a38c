"""One source's authentication and authorization: its verifiers, roles and group rule.

The verifier is chosen by the credential a request carries; a request never falls
through from one method to another. Authorization (the roles a source requires, the
device groups a token may post for) belongs here too, with the proof it reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from receiver.auth.base import Credentials, Expiry, MethodSettings, Principal, Verifier
from receiver.auth.methods import CREDENTIAL_HEADERS, METHODS
from receiver.errors import AuthError, AuthRequiredError, ConfigError, ForbiddenError, RateLimitedError

# Slow checks (Argon2) run here, two at a time, so the event loop keeps serving; beyond
# SLOW_QUEUE waiting, more are refused at once instead of piling up.
SLOW_WORKERS = 2
SLOW_QUEUE = 64
_slow_pool = ThreadPoolExecutor(max_workers=SLOW_WORKERS, thread_name_prefix="slow-auth")


class _SlowLane:
    """Counts the slow checks queued or running in this process."""

    waiting = 0


class SourceAuth:
    """Authenticates requests for one source with the verifiers it was configured with."""

    def __init__(
        self,
        verifiers: Sequence[Verifier],
        *,
        require_roles: Iterable[str] = (),
        restrict_to_token_groups: bool = False,
    ) -> None:
        self.verifiers = tuple(verifiers)
        self._challenges = [v.challenge for v in self.verifiers if v.challenge]
        self._roles = frozenset(require_roles)
        self._restrict_groups = restrict_to_token_groups
        self.credential_headers = CREDENTIAL_HEADERS.union(*(v.credential_headers for v in self.verifiers))

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The credential the request carries decides the one method tried: no falling through."""
        verifier = self._choose(credentials)
        if verifier is None:
            accepted = ", ".join(sorted({v.method for v in self.verifiers}))
            msg = f"this source needs credentials; it accepts: {accepted}"
            raise AuthRequiredError(msg, self._challenges)
        try:
            if verifier.offload(credentials):
                principal = await _off_the_loop(verifier, credentials)
            else:
                principal = verifier.verify(credentials)
        except AuthError as exc:
            if verifier.challenge and type(exc).challenge == AuthError.challenge:
                exc.challenge = verifier.challenge
            raise
        return principal

    def is_costly(self, credentials: Credentials) -> bool:
        """Would the check this credential gets be an expensive one (see ``Verifier.is_costly``)?"""
        verifier = self._choose(credentials)
        return verifier is not None and verifier.is_costly(credentials)

    def authorize(self, principal: Principal) -> None:
        """The credential must carry every role this source requires."""
        missing = sorted(self._roles - principal.roles)
        if missing:
            msg = f"the credential lacks the role(s) {', '.join(missing)} this source requires"
            raise ForbiddenError(msg)

    def authorize_groups(self, principal: Principal, groups: Iterable[str | None]) -> None:
        """With ``restrict_to_token_groups``, every message's device group must be one the token carries."""
        if not self._restrict_groups:
            return
        for group in groups:
            if group is None or principal.groups is None or group not in principal.groups:
                raise ForbiddenError("the message's device group is not one of the groups the credential carries")

    @staticmethod
    def authorize_devices(principal: Principal, devices: Iterable[str]) -> None:
        """A credential that proves a device vouches for that device alone: a message naming another is refused.

        Beam signs a SIM's identity headers, Funk's token names its SIM; the body (a Funnel
        envelope's ``imsi``) is the sender's own words and may not choose another device.
        """
        if principal.devices is None:
            return
        for device in devices:
            if device and device not in principal.devices:
                msg = "the message names another device than the one its credential proves; send it with that device's"
                raise ForbiddenError(msg + " credential")

    def _choose(self, credentials: Credentials) -> Verifier | None:
        candidates = [v for v in self.verifiers if v.carries(credentials)]
        if len(candidates) > 1:
            # JWTs and static tokens share the Bearer scheme: a JWT-shaped token goes to
            # the JWT verifier, anything else to the static tokens.
            authorization = credentials.authorization()
            shaped = authorization is not None and authorization[1].count(".") == 2
            candidates.sort(key=lambda v: v.method != ("jwt" if shaped else "bearer"))
        return candidates[0] if candidates else None

    def expiries(self) -> Iterable[Expiry]:
        for verifier in self.verifiers:
            yield from verifier.expiries()


async def _off_the_loop(verifier: Verifier, credentials: Credentials) -> Principal:
    if _SlowLane.waiting >= SLOW_QUEUE:
        msg = "too many password checks are in progress; retry in a second"
        raise RateLimitedError(msg, retry_after=1)
    _SlowLane.waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_slow_pool, verifier.verify, credentials)
    finally:
        _SlowLane.waiting -= 1


def build_source_auth(
    methods: Sequence[MethodSettings],
    *,
    default_subject: str | None = None,
    require_roles: Iterable[str] = (),
    restrict_to_token_groups: bool = False,
) -> SourceAuth:
    """Build the verifiers of a source, parsing keys and reading secrets now, once."""
    verifiers: list[Verifier] = []
    problems: list[str] = []
    for index, settings in enumerate(methods):
        try:
            verifiers.append(METHODS[settings.type].build(settings, default_subject))
        except ConfigError as exc:
            problems.extend(f"auth.{index}.{p}" for p in exc.problems)
    names = [v.method for v in verifiers]
    duplicates = sorted({m for m in names if names.count(m) > 1})
    if duplicates:
        problems.append(f"auth: each method at most once per source; {', '.join(duplicates)} is repeated")
    if problems:
        raise ConfigError(problems)
    return SourceAuth(verifiers, require_roles=require_roles, restrict_to_token_groups=restrict_to_token_groups)
