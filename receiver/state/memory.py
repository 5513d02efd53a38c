"""The state kept in this process: one worker, one replica (the default, and the demo's).

Single-use ids follow ``base.Once``: the first copy of a request is handled; copies
arriving while it runs wait for its answer and get the same one. A durable answer (2xx,
or a dead-lettered refusal) is kept for the id's window, so a later retry of the same
delivery (same body) is answered alike and publishes nothing; the same id with another
body is 401 ``replayed_request``. Every map here is bounded: a full one drops the entry
closest to expiry (single-use ids) or the oldest (the rest).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from receiver.errors import ReplayedRequestError
from receiver.limits import Budget, MinuteWindow

if TYPE_CHECKING:
    from receiver.auth import SingleUse


class _Entry:
    __slots__ = ("answer", "done", "fingerprint", "until")

    def __init__(self, until: float, fingerprint: bytes) -> None:
        self.until, self.fingerprint = until, fingerprint
        self.done = asyncio.Event()
        self.answer: Any = None  # the first copy's answer: an ``Accepted``, or the ``RequestError`` it raised


class MemoryOnce:
    """One request's hold on a single-use id kept in this process."""

    __slots__ = ("_cache", "_entry", "_key", "first")

    def __init__(self, cache: ReplayCache, key: str, entry: _Entry, *, first: bool) -> None:
        self._cache, self._key, self._entry = cache, key, entry
        self.first = first

    async def earlier_answer(self) -> Any:
        # The first copy always ends (its publish has a deadline) and settles or releases.
        await self._entry.done.wait()
        return self._entry.answer

    def settle(self, answer: Any) -> None:
        self._entry.answer = answer
        self._entry.done.set()

    def release(self, answer: Any) -> None:
        self._entry.answer = answer
        self._entry.done.set()
        self._cache.forget(self._key, self._entry)


class ReplayCache:
    """Single-use ids within their window; bounded, the entry closest to expiry evicted first."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []
        self._max = max_entries

    def reserve(self, key: str, until: float, now: float, body: bytes, refusal: str) -> MemoryOnce:
        self._expire(now)
        fingerprint = hashlib.sha256(body).digest()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise ReplayedRequestError(refusal)
            return MemoryOnce(self, key, entry, first=False)
        entry = self._entries[key] = _Entry(until, fingerprint)
        heapq.heappush(self._heap, (until, key))
        while len(self._entries) > self._max:
            _, oldest = heapq.heappop(self._heap)
            self._entries.pop(oldest, None)
        return MemoryOnce(self, key, entry, first=True)

    def forget(self, key: str, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            until, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry.until == until:
                del self._entries[key]


class Bounded(OrderedDict[str, Any]):
    """A map that forgets its oldest entry past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)


class MemoryState:
    """Every concern of ``base.State`` in this process's memory."""

    shared = False

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._replays = ReplayCache(max_entries)
        self._published = Bounded(2 * max_entries)  # event id -> until
        self._budgets = Bounded(max_entries)  # key -> MinuteWindow
        self._failures = Bounded(max_entries)  # key -> MinuteWindow

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check(self) -> str | None:
        return None

    async def reserve(self, key: str, single_use: SingleUse, now: float, body: bytes, *, fail_open: bool) -> MemoryOnce:
        del fail_open  # memory always answers
        return self._replays.reserve(key, single_use.until, now, body, single_use.refusal)

    async def seen(self, event_ids: Collection[str], now: float) -> set[str]:
        return {i for i in event_ids if self._published.get(i, -1.0) >= now}

    def remember(self, event_ids: Collection[str], now: float, window: float) -> None:
        for event_id in event_ids:
            self._published.put(event_id, now + window)

    def _window(self, windows: Bounded, key: str, limit: int) -> MinuteWindow:
        window: MinuteWindow | None = windows.get(key)
        if window is None or window.limit != limit:
            window = MinuteWindow(limit)
            windows.put(key, window)
        return window

    def budget(self, key: str, limit: int, now: float) -> Budget:
        return self._window(self._budgets, key, limit).peek(now)

    async def take(self, key: str, limit: int, now: float) -> tuple[bool, Budget]:
        return self._window(self._budgets, key, limit).take(now)

    def blocked(self, key: str, limit: int, now: float) -> Budget | None:
        del limit  # the window was made with it
        window: MinuteWindow | None = self._failures.get(key)
        if window is None or not window.exhausted(now):
            return None
        return window.budget(now)

    async def failed(self, key: str, limit: int, now: float) -> None:
        self._window(self._failures, key, limit).take(now)
