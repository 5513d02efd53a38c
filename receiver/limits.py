"""Request budgets: fixed one-minute windows (Soracom's model), and the state a limited answer reports.

Used per source for its request budget and per client address for failed
authentications; ``receiver.state`` keeps the windows, in memory or in Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW = 60.0


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Budget:
    """The state a limited source reports on every response."""

    limit: int
    remaining: int
    reset: int  # seconds until the window refreshes

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class MinuteWindow:
    """Counts events in the current minute window; ``take`` spends one if any are left."""

    __slots__ = ("count", "limit", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = -math.inf
        self.count = 0

    def _roll(self, now: float) -> None:
        if now - self.start >= WINDOW:
            self.start = now - (now % WINDOW)
            self.count = 0

    def take(self, now: float) -> tuple[bool, Budget]:
        self._roll(now)
        allowed = self.count < self.limit
        if allowed:
            self.count += 1
        return allowed, self.budget(now)

    def peek(self, now: float) -> Budget:
        """The budget as it stands, nothing spent."""
        self._roll(now)
        return self.budget(now)

    def exhausted(self, now: float) -> bool:
        self._roll(now)
        return self.count >= self.limit

    def budget(self, now: float) -> Budget:
        reset = max(1, math.ceil(self.start + WINDOW - now))
        return Budget(self.limit, max(0, self.limit - self.count), reset)
