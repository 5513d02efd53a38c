"""Replay refusal: remember what was accepted until it could no longer be accepted anyway."""

from __future__ import annotations

import heapq


class ReplayCache:
    """Ids seen within their validity window; bounded, oldest expiry evicted first.

    ``first_use(id, until, now)`` is True the first time an id is presented and False on
    every later presentation until ``until`` has passed. The bound keeps a flood of
    distinct ids from growing memory: past it the entries closest to expiry go first.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._max = max_entries

    def first_use(self, key: str, until: float, now: float) -> bool:
        self._expire(now)
        seen = self._until.get(key)
        if seen is not None and seen >= now:
            return False
        self._until[key] = until
        heapq.heappush(self._heap, (until, key))
        while len(self._until) > self._max:
            _, oldest = heapq.heappop(self._heap)
            self._until.pop(oldest, None)
        return True

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            until, key = heapq.heappop(self._heap)
            if self._until.get(key) == until:
                del self._until[key]
