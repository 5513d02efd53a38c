"""What a request offers as proof, what authentication yields, and what every method declares.

An authentication method is one module under ``receiver/auth/``: its settings model
(a ``MethodSettings`` whose ``type`` names it) and its verifier. The verifier declares,
as data, all the core needs to know of it: the headers that carry its credential (never
kept, logged or shown to vendor code), the error classes it raises, its OpenAPI security
scheme, its challenge. ``auth/methods.py`` lists the methods; nothing else names one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from receiver.errors import AuthError

# Headers that carry a credential in HTTP itself, whichever method a source uses.
HTTP_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Credentials:
    """The parts of a request a verifier may look at: headers, the raw body, the time."""

    headers: Mapping[bytes, bytes]  # lower-case names; the first of repeated headers
    body: bytes
    now: float  # Unix seconds, taken once when the request arrived

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode())
        return None if value is None else value.decode("latin-1")

    def authorization(self) -> tuple[str, str] | None:
        """``(scheme in lower case, credentials)`` of the Authorization header, if any."""
        value = self.headers.get(b"authorization")
        if value is None:
            return None
        scheme, _, param = value.decode("latin-1").strip().partition(" ")
        param = param.strip()
        return (scheme.lower(), param) if param else None


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Principal:
    """The proven sender. ``name`` and ``key_id`` are never secrets: they go to logs and audit."""

    method: str
    name: str
    key_id: str | None = None
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] | None = None  # None: the credential does not restrict groups
    claims: Mapping[str, Any] = field(default_factory=dict)
    proven: Mapping[str, str] | None = None
    """Device identity the credential itself proves (header name -> value); vendors prefer it."""
    single_use: SingleUse | None = field(default=None, compare=False, repr=False)
    """The signed id that makes this request usable once, for credentials that carry one."""
    devices: frozenset[str] | None = field(default=None, compare=False)
    """The device ids the credential proves (a SIM's IMSI, IMEI, SIM id); None: it proves no device."""


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class SingleUse:
    """A signed request id (``webhook-id``, Beam signature, ``jti``) the pipeline reserves before handling.

    ``until`` is the last instant the credential could be accepted, so the id need not be
    remembered longer; ``refusal`` is the message when it comes back with another body.
    """

    id: str
    until: float
    refusal: str


@dataclass(frozen=True, slots=True)
class Expiry:
    """A credential with a ``not_after``, for the expiry metric."""

    method: str
    key_id: str
    not_after: float


class MethodSettings(BaseModel):
    """The settings of one method; subclasses fix ``type`` to the method's name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str


class Verifier(Protocol):
    """Checks one authentication method for one source, and says what it touches."""

    @property
    def method(self) -> str:
        """The config ``type`` of this method."""
        ...

    @property
    def challenge(self) -> str | None:
        """The WWW-Authenticate challenge naming this method, if it has one."""
        ...

    @property
    def credential_headers(self) -> frozenset[str]:
        """Lower-case names of the headers carrying this method's credential, as configured."""
        ...

    def security_scheme(self) -> tuple[str, dict[str, Any]]:
        """Its OpenAPI security scheme, named, built from the settings it was given."""
        ...

    def carries(self, credentials: Credentials) -> bool:
        """Does the request carry this method's credential at all (not: is it valid)?"""
        ...

    def offload(self, credentials: Credentials) -> bool:
        """Would verifying this credential hold the event loop (a slow hash not remembered)?"""
        ...

    def is_costly(self, credentials: Credentials) -> bool:
        """Is checking this credential expensive (a slow hash or a public-key signature, not remembered)?

        An address over its failure limit gets only the cheap checks: a co-tenant of a
        shared vendor address must not be able to lock a valid sender out, and nobody
        may spend the expensive ones on guesses.
        """
        ...

    def verify(self, credentials: Credentials) -> Principal:
        """Return the principal, or raise one of the ``codes`` errors."""
        ...

    def expiries(self) -> Iterable[Expiry]:
        """Credentials of this verifier that carry a ``not_after``."""
        ...


@dataclass(frozen=True, slots=True)
class Method:
    """One authentication method as the registry lists it: everything the core derives from."""

    name: str  # the config ``type``
    settings: type[MethodSettings]
    build: Callable[[Any, str | None], Verifier]  # (its settings, the source's default subject)
    codes: frozenset[type[AuthError]]  # the refusals it raises
    credential_headers: frozenset[str]  # its default header names, scrubbed for every source
    signs_only_body: bool = False  # its proof covers the body alone: not the query string, not the media type
