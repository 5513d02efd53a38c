"""The audit trail: one record per request (the fields of Soracom's audit log), off the request path.

Records are queued when a response is finished and written in batches by a background
task, to ``<topic_prefix>.audit`` (or the embedded store), packed as JSON lines into
few Kafka records per flush (one ``producer.send`` per record is the costly part, not
the bytes). A request never waits for its audit record.

Flood control: every request that got past authentication is recorded. Requests
refused *before* a sender was proven (unknown source, no or bad credentials, address
not allowed, rate limited) are recorded individually up to ``unauthenticated_per_second``
per source; beyond that they are only counted, and a ``summary`` record per
(source, code) is written every ``summary_interval_seconds`` with the count and the
busiest client addresses. An unauthenticated flood therefore costs the broker at most
a fixed number of records per second, whatever its size. The write buffer is bounded
too: when the publisher is down, the oldest records are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json as json_bytes

from receiver.events import Outcome, Record
from receiver.normalize import rfc3339
from receiver.publish import Publisher

log = logging.getLogger("receiver.audit")

_MAX_BUFFER = 50_000
_RECORD_BYTES = 256 * 1024  # audit entries are packed as JSON lines into records of at most this size
JSON_LINES = b"application/x-ndjson"
_SUMMARY_CLIENTS = 10
_MAX_CLIENTS = 10_000  # client addresses counted one by one per summary; the rest as one
_OTHERS = "(others)"
_UNKNOWN = "(unknown source)"
AUTHENTICATED = "authenticated"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the HTTP layer knows once the response is finished."""

    method: str
    path: str
    status: int
    latency_ms: float
    finished_at: float


class AuditTrail:
    def __init__(  # noqa: PLR0913 - keyword-only settings, wired once by create_app
        self,
        topic: str,
        *,
        unauthenticated_per_second: float,
        summary_interval: float,
        flush_interval: float,
        is_known: Callable[[str], bool] = lambda _source: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self._is_known = is_known
        self._rate = unauthenticated_per_second
        self._summary_interval = summary_interval
        self._flush_interval = flush_interval
        self._clock = clock
        self._buffer: deque[dict[str, Any]] = deque()
        self._allowance: dict[str, tuple[float, float]] = {}  # source -> (tokens, updated)
        self._suppressed: dict[tuple[str, str], Counter[str]] = {}
        self._last_summary = clock()
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, outcome: Outcome, facts: RequestFacts) -> None:
        """Queue the audit record of one finished request (or count it, under a flood)."""
        entry = {
            "type": "request",
            "time": rfc3339(facts.finished_at),
            "request_id": outcome.request_id,
            "client_ip": outcome.client_ip,
            "source": outcome.source,
            "principal": outcome.principal,
            "auth_method": outcome.auth_method,
            "key_id": outcome.key_id,
            "method": facts.method,
            "path": facts.path,
            "status": facts.status,
            "code": outcome.code or ("ok" if facts.status < 400 else f"http_{facts.status}"),
            "event_id": outcome.event_id,
            "latency_ms": facts.latency_ms,
        }
        # Flood control is keyed by what the config names: a source name the config does not
        # know is the sender's choice, so all of them share one allowance and one summary.
        source = outcome.source or ""
        flood_key = source if not source or self._is_known(source) else _UNKNOWN
        if outcome.principal is None and not self._allow(flood_key, facts.finished_at):
            clients = self._suppressed.setdefault((flood_key, str(entry["code"])), Counter())
            client = outcome.client_ip if outcome.client_ip in clients or len(clients) < _MAX_CLIENTS else _OTHERS
            clients[client] += 1
            return
        self._append(entry)

    def _allow(self, source: str, now: float) -> bool:
        tokens, updated = self._allowance.get(source, (self._rate, now))
        tokens = min(self._rate, tokens + (now - updated) * self._rate)
        allowed = tokens >= 1
        self._allowance[source] = (tokens - 1 if allowed else tokens, now)
        return allowed

    def _append(self, entry: dict[str, Any]) -> None:
        self._buffer.append(entry)
        while len(self._buffer) > _MAX_BUFFER:
            self._buffer.popleft()
            self.dropped += 1

    def _summaries(self, now: float) -> None:
        if now - self._last_summary < self._summary_interval and not self._draining:
            return
        for (source, code), clients in self._suppressed.items():
            self._append({
                "type": "summary",
                "time": rfc3339(now),
                "window_start": rfc3339(self._last_summary),
                "source": source,
                "code": code,
                "count": sum(clients.values()),
                "top_clients": [{"client_ip": ip, "count": n} for ip, n in clients.most_common(_SUMMARY_CLIENTS)],
            })  # fmt: skip
        self._suppressed.clear()
        self._last_summary = now

    _draining = False

    async def flush(self, publisher: Publisher) -> None:
        """Write what is queued; on failure keep it (bounded) for the next attempt."""
        self._summaries(self._clock())
        if not self._buffer:
            return
        batch = list(self._buffer)
        records = [
            Record(topic=self.topic, key=b"", value=b"\n".join(lines), headers=[("content-type", JSON_LINES)])
            for lines in _packed(json_bytes(entry) for entry in batch)
        ]
        try:
            await publisher.publish(records)
        except Exception as exc:  # noqa: BLE001 - the trail must survive any publisher failure
            log.warning("receiver.audit_delayed", extra={"queued": len(batch), "error": str(exc)})
            return
        for _ in batch:
            self._buffer.popleft()
        self.written += len(batch)

    async def run(self, publisher: Publisher) -> None:
        """Flush every ``flush_interval`` until cancelled."""
        while True:
            await asyncio.sleep(self._flush_interval)
            await self.flush(publisher)

    def start(self, publisher: Publisher) -> None:
        self._task = asyncio.create_task(self.run(publisher), name="audit-writer")

    async def stop(self, publisher: Publisher, within: float = 5.0) -> None:
        """Final flush, summaries included, before the publisher closes; at most ``within`` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._draining = True
        try:
            async with asyncio.timeout(within):
                await self.flush(publisher)
        except TimeoutError:
            self.dropped += len(self._buffer)
            log.warning("receiver.audit_lost", extra={"records": len(self._buffer), "seconds": within})


def _packed(lines: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Lines grouped so each group, joined, stays under ``_RECORD_BYTES`` (a longer line alone)."""
    group: list[bytes] = []
    size = 0
    for line in lines:
        if group and size + len(line) + 1 > _RECORD_BYTES:
            yield group
            group, size = [], 0
        group.append(line)
        size += len(line) + 1
    if group:
        yield group
