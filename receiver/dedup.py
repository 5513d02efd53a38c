"""Deduplication of vendor retries: an event id seen within the window is not published again.

The idempotent producer already covers the broker's retries; this covers the vendor's
(the same delivery gets the same event id). Memory only, per process: with several
replicas a retry that lands on another replica is published again, and consumers must
still drop duplicates by ``ce_id`` (the README says so).
"""

from __future__ import annotations

from collections import OrderedDict


class Deduplicator:
    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def seen(self, event_id: str, now: float) -> bool:
        """Was this id published within its window (and so must not be again)?"""
        until = self._seen.get(event_id)
        if until is None:
            return False
        if until < now:
            del self._seen[event_id]
            return False
        return True

    def remember(self, event_id: str, now: float, window: float) -> None:
        self._seen[event_id] = now + window
        self._seen.move_to_end(event_id)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
