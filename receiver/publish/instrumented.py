"""A publisher that records what passes through it: latency, acks by topic, dead letters, trace context.

It sheds nothing: a full producer backlog is refused before the body is read, by
``receiver.gate``, which reads ``Metrics.pending`` as kept here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from receiver.errors import UnavailableError
from receiver.events import Record
from receiver.metrics import Metrics
from receiver.publish import Publisher
from receiver.tracing import Tracing


def _with_headers(records: Sequence[Record], extra: Sequence[tuple[str, bytes]]) -> Sequence[Record]:
    return [replace(r, headers=[*r.headers, *extra]) for r in records] if extra else records


class InstrumentedPublisher:
    """Wraps any ``Publisher``; the wrapped one stays unaware of metrics."""

    def __init__(self, inner: Publisher, metrics: Metrics, tracing: Tracing, deadletter_topic: str) -> None:
        self.name = inner.name
        self._inner = inner
        self._metrics = metrics
        self._tracing = tracing
        self._deadletter_topic = deadletter_topic

    async def publish(self, records: Sequence[Record]) -> None:
        m = self._metrics
        m.pending += len(records)
        started = time.perf_counter()
        outcome = "error"
        try:
            if self._tracing.enabled:
                with self._tracing.producer_span([r.topic for r in records]) as trace:
                    await self._inner.publish(_with_headers(records, trace))
            else:
                await self._inner.publish(_with_headers(records, self._tracing.incoming()))
            outcome = "acked"
        except UnavailableError:
            outcome = "unavailable"
            raise
        finally:
            m.pending -= len(records)
            m.observe_publish(self.name, outcome, time.perf_counter() - started)
        for record in records:
            m.count_published(record.topic)
            if record.topic == self._deadletter_topic:
                code = dict(record.headers).get("error_code", b"").decode()
                m.deadletters.labels(m.source_label(record.key.decode()), code).inc()

    async def check(self) -> str | None:
        return await self._inner.check()
