"""What the receiver remembers between requests, and the interface every place it is kept offers.

Four concerns, each keyed by what was proven or configured, never by a value a sender
picks freely without a bound:

- **single-use ids** (a ``webhook-id``, a Beam signature, a ``jti``): reserved before a
  request is handled, so copies of it are answered like the first and publish nothing;
- **the dedup window**: event ids published recently are not published again;
- **source budgets**: requests per source and fixed one-minute window;
- **failed authentications**: per source and client address and minute; past the limit
  the address is refused before any credential check.

``memory.MemoryState`` keeps them in this process; ``redis.RedisState`` shares them
between every worker and replica. Both answer through the same ``State`` interface, so
the pipeline and admission never know which one runs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from receiver.auth import SingleUse
    from receiver.limits import Budget


class Once(Protocol):
    """One request's hold on a single-use id: the first copy, or a copy waiting for the first's answer."""

    first: bool

    async def earlier_answer(self) -> Any:
        """For a copy: the first copy's answer (an ``Accepted``, or the ``RequestError`` to raise)."""
        ...

    def settle(self, answer: Any) -> None:
        """The request was durably handled: keep ``answer`` for copies until the id's window ends."""
        ...

    def release(self, answer: Any) -> None:
        """It was not: copies waiting now get ``answer``; later ones are handled afresh."""
        ...


class State(Protocol):
    """Where single-use ids, the dedup window, budgets and failure counts live."""

    shared: bool
    """True when every worker and replica sees the same state."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Finish the writes still under way (bounded), then disconnect."""
        ...

    async def check(self) -> str | None:
        """What is wrong with the store, for readiness; None when it answers."""
        ...

    async def reserve(self, key: str, single_use: SingleUse, now: float, body: bytes, *, fail_open: bool) -> Once:
        """Hold ``key`` until ``single_use.until`` for this request, or join the request holding it.

        Raises ``ReplayedRequestError(single_use.refusal)`` when ``key`` comes back with another body,
        and ``StateUnavailableError`` when the store cannot say (unless ``fail_open``).
        """
        ...

    async def seen(self, event_ids: Collection[str], now: float) -> set[str]:
        """The ids among ``event_ids`` published within their dedup window (none when unknown)."""
        ...

    def remember(self, event_ids: Collection[str], now: float, window: float) -> None:
        """Note ids just published, for ``window`` seconds (written in the background)."""
        ...

    def budget(self, key: str, limit: int, now: float) -> Budget:
        """The budget as this process last saw it; nothing spent, nothing asked."""
        ...

    async def take(self, key: str, limit: int, now: float) -> tuple[bool, Budget]:
        """Spend one request of ``key``'s budget for this minute, if any is left."""
        ...

    def blocked(self, key: str, limit: int, now: float) -> Budget | None:
        """The failure budget when ``key`` spent all of it this minute (known here without asking)."""
        ...

    async def failed(self, key: str, limit: int, now: float) -> None:
        """Count one failed authentication against ``key``."""
        ...
