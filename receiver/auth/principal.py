"""What authentication yields, and what every verifier must offer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """The proven sender: the method used and a name that is never a secret."""

    method: str
    name: str
    claims: Mapping[str, Any] = field(default_factory=dict)


class Verifier(Protocol):
    """Checks the credentials of one ``Authorization`` scheme for one source."""

    scheme: str  # lower-case scheme name: "bearer" or "basic"
    challenge: str  # the WWW-Authenticate challenge that names this method

    def verify(self, credentials: str, now: float) -> Principal:
        """Return the principal, or raise an ``AuthError`` subclass."""
        ...
