"""What a request offers as proof, what authentication yields, and what every verifier offers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Principal:
    """The proven sender. ``name`` and ``key_id`` are never secrets: they go to logs and audit."""

    method: str
    name: str
    key_id: str | None = None
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] | None = None  # None: the credential does not restrict groups
    claims: Mapping[str, Any] = field(default_factory=dict)
    accept: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)
    """Called once the request was durably handled: replay caches remember it only then."""


@dataclass(frozen=True, slots=True)
class Expiry:
    """A credential with a ``not_after``, for the expiry metric."""

    method: str
    key_id: str
    not_after: float


class Verifier(Protocol):
    """Checks one authentication method for one source."""

    @property
    def method(self) -> str:
        """The config ``type`` of this method."""
        ...

    @property
    def challenge(self) -> str | None:
        """The WWW-Authenticate challenge naming this method, if it has one."""
        ...

    def carries(self, credentials: Credentials) -> bool:
        """Does the request carry this method's credential at all (not: is it valid)?"""
        ...

    def verify(self, credentials: Credentials) -> Principal:
        """Return the principal, or raise an ``AuthError`` subclass."""
        ...

    def expiries(self) -> Iterable[Expiry]:
        """Credentials of this verifier that carry a ``not_after``."""
        ...
