"""Request budgets: per source (Soracom's per-minute model) and per client address for failures.

Both are fixed one-minute windows, counted in memory per process: with several
replicas each enforces its own share, which the README states. Budget state is
bounded: the failure counters keep at most ``max_clients`` addresses.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

WINDOW = 60.0


@dataclass(frozen=True, slots=True)
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


class FailureLimiter:
    """Unauthenticated failures per (source, client address) and minute."""

    def __init__(self, per_minute: int, max_clients: int = 100_000) -> None:
        self._per_minute = per_minute
        self._windows: OrderedDict[tuple[str, str], MinuteWindow] = OrderedDict()
        self._max = max_clients

    def blocked(self, source: str, client: str, now: float) -> Budget | None:
        """The budget when this address spent all its failures this minute, else None."""
        if self._per_minute <= 0:
            return None
        window = self._windows.get((source, client))
        if window is None or not window.exhausted(now):
            return None
        return window.budget(now)

    def failed(self, source: str, client: str, now: float) -> None:
        if self._per_minute <= 0:
            return
        key = (source, client)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = MinuteWindow(self._per_minute)
            if len(self._windows) > self._max:
                self._windows.popitem(last=False)
        window.take(now)
