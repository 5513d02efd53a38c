"""Signed request ids, handled exactly once: reserved before processing, answered alike after.

A signed id (a Standard Webhooks ``webhook-id``, a Beam signature, a ``jti``) is
*reserved* when it is verified, before anything else happens, so concurrent copies of
one request cannot all be processed. The first copy goes on; the others wait for its
answer and get the same one. When the first copy's request is durably handled (2xx, or
a dead-lettered refusal), its answer is kept for the id's window: a later retry of the
same delivery (same body) is answered like the first one and publishes nothing, so a
replay gains an attacker nothing and a sender whose answer was lost is not punished.
The same id with another body is not a retry: 401 ``replayed_request``. When the first
copy ends otherwise (503, say), the reservation is released and the sender's retry is
processed afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any

from receiver.errors import ReplayedRequestError


@dataclass(eq=False)
class _Entry:
    until: float
    fingerprint: bytes
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answer: Any = None  # the first copy's answer: an ``Accepted``, or the ``RequestError`` it raised


class Once:
    """One request's hold on a signed id: the first copy, or a copy waiting for the first's answer."""

    def __init__(self, cache: ReplayCache, key: str, entry: _Entry, *, first: bool) -> None:
        self._cache, self._key, self._entry = cache, key, entry
        self.first = first

    async def earlier_answer(self) -> Any:
        """For a copy: the first copy's answer once it has one (it may be an error to raise).

        The first copy always ends (its publish has a deadline) and settles or releases.
        """
        await self._entry.done.wait()
        return self._entry.answer

    def settle(self, answer: Any) -> None:
        """The request was durably handled: keep ``answer`` for retries until the id's window ends."""
        self._entry.answer = answer
        self._entry.done.set()

    def release(self, answer: Any) -> None:
        """The request was not durably handled: copies waiting now get ``answer``; later ones start afresh."""
        self._entry.answer = answer
        self._entry.done.set()
        self._cache.forget(self._key, self._entry)


class ReplayCache:
    """Signed ids within their validity window; bounded, the entry closest to expiry evicted first."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []
        self._max = max_entries

    def reserve(self, key: str, until: float, now: float, body: bytes, message: str) -> Once:
        """Hold ``key`` for this request, or join the request that holds it; raise when it is not a retry.

        ``message`` is the refusal's text when ``key`` comes back with another body.
        """
        self._expire(now)
        fingerprint = hashlib.sha256(body).digest()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise ReplayedRequestError(message)
            return Once(self, key, entry, first=False)
        entry = self._entries[key] = _Entry(until, fingerprint)
        heapq.heappush(self._heap, (until, key))
        while len(self._entries) > self._max:
            _, oldest = heapq.heappop(self._heap)
            self._entries.pop(oldest, None)
        return Once(self, key, entry, first=True)

    def forget(self, key: str, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            until, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry.until == until:
                del self._entries[key]
