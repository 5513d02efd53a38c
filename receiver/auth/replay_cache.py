"""Replay refusal: remember what was accepted until it could no longer be accepted anyway.

Two steps, so a refusal of ours never turns into a lost message: ``check`` refuses an
id that was already *accepted*, and ``remember`` records an id only once its request
was durably handled (the pipeline calls the principal's ``accept`` hook after the
publish). A sender retrying after our 503 is therefore not mistaken for a replay.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from receiver.errors import ReplayedRequestError


class ReplayCache:
    """Ids accepted within their validity window; bounded, the entry closest to expiry evicted first."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._max = max_entries

    def check(self, key: str, now: float, message: str) -> Callable[[], None]:
        """Raise ``ReplayedRequestError`` if ``key`` was accepted and is still valid; else the hook
        that remembers it (call it once the request was durably handled)."""
        self._expire(now)
        seen = self._until.get(key)
        if seen is not None and seen >= now:
            raise ReplayedRequestError(message)
        return lambda: None

    def hook(self, key: str, until: float, now: float, message: str) -> Callable[[], None]:
        """``check``, returning the hook that remembers ``key`` until ``until``."""
        self.check(key, now, message)
        return lambda: self.remember(key, until)

    def remember(self, key: str, until: float) -> None:
        self._until[key] = until
        heapq.heappush(self._heap, (until, key))
        while len(self._until) > self._max:
            _, oldest = heapq.heappop(self._heap)
            self._until.pop(oldest, None)

    def first_use(self, key: str, until: float, now: float) -> bool:
        """Check and remember at once (for callers without a later acceptance step)."""
        try:
            self.check(key, now, "")
        except ReplayedRequestError:
            return False
        self.remember(key, until)
        return True

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            until, key = heapq.heappop(self._heap)
            if self._until.get(key) == until:
                del self._until[key]
