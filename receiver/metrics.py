"""Prometheus metrics: one registry per app, label values from small fixed sets.

Labels never carry a device id, a raw path or anything a sender can vary at will:
a source id is kept only when it is configured, an event name only when its vendor
knows it, everything else becomes ``_other``.

One process keeps its values in memory and reads its gauges at scrape time.
``SharedMetrics`` is the variant for one worker among several: values live in files
that whichever worker serves the scrape adds up (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

OTHER = "_other"
NONE = "_none"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every series the receiver exports, bound to its own registry."""

    def __init__(self, events_by_source: Mapping[str, Collection[str]]) -> None:
        self._events = {source: frozenset(events) for source, events in events_by_source.items()}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "receiver_requests_total",
            "Requests answered, by source, event type, status and error code.",
            ["source", "event", "status", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "receiver_request_duration_seconds",
            "Time from request start to response, by source.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Plain counters read at scrape time: the event loop is one thread, so the request
        # path needs no lock for them. With several workers each one's count is summed.
        self._in_flight_gauge = Gauge(
            "receiver_requests_in_flight", "Requests being handled now.", multiprocess_mode="livesum", registry=r
        )
        self.in_flight = 0
        self.follow(self._in_flight_gauge, lambda: self.in_flight)
        self.auth_failures = Counter(
            "receiver_auth_failures_total",
            "Refused authentications, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "receiver_publish_duration_seconds",
            "Time from handing records to the publisher to their acknowledgement.",
            ["publisher", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.published = Counter(
            "receiver_events_published_total", "Records acknowledged, by topic.", ["topic"], registry=r
        )
        self.deadletters = Counter(
            "receiver_deadletters_total", "Refused deliveries kept as dead letters, by source and code.",
            ["source", "code"], registry=r,
        )  # fmt: skip
        self._pending_gauge = Gauge(
            "receiver_publish_pending_records",
            "Records handed to the producer and not yet acknowledged (the producer's buffer).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.pending = 0
        self.follow(self._pending_gauge, lambda: self.pending)
        self.sequences = Counter(
            "receiver_sequence_anomalies_total",
            "Device messages whose counter showed a gap, a repeat or a reset, by source.",
            ["source", "status"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._published_children: dict[str, Any] = {}
        self._publish_children: dict[tuple[str, str], Any] = {}
        # Workers share one store file, and each reports its depth as of its last write:
        # the largest is the newest. Each worker has its own producer and breaker: 1 when any is open.
        self.store_depth = Gauge(
            "receiver_store_depth_events", "Events held in the embedded store.", multiprocess_mode="max", registry=r
        )
        self.breaker_open = Gauge(
            "receiver_kafka_breaker_open",
            "1 while the Kafka circuit breaker is open (deliveries get 503 at once).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.shed = Counter(
            "receiver_shed_total",
            "Deliveries answered 503 overloaded at once: waited too long, slots full, Kafka backlog full.",
            registry=r,
        )

        self.state_fallbacks = Counter(
            "receiver_state_fallbacks_total",
            "Checks answered from this process's memory (or refused) because the shared state did not answer.",
            ["concern"],
            registry=r,
        )

    def count_state_fallback(self, concern: str) -> None:
        self.state_fallbacks.labels(concern).inc()

    # Children of labelled metrics, kept because ``labels()`` costs microseconds per call
    # on the request path; the label sets are bounded, so these dicts are too.
    def count_request(self, source: str, event: str, status: int, code: str) -> None:
        key = (source, event, status, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(source, event, str(status), code)
        child.inc()

    def observe_request(self, source: str, seconds: float) -> None:
        child = self._latency_children.get(source)
        if child is None:
            child = self._latency_children[source] = self.request_seconds.labels(source)
        child.observe(seconds)

    def count_published(self, topic: str, count: int = 1) -> None:
        child = self._published_children.get(topic)
        if child is None:
            child = self._published_children[topic] = self.published.labels(topic)
        child.inc(count)

    def observe_publish(self, publisher: str, outcome: str, seconds: float) -> None:
        key = (publisher, outcome)
        child = self._publish_children.get(key)
        if child is None:
            child = self._publish_children[key] = self.publish_seconds.labels(publisher, outcome)
        child.observe(seconds)

    def follow(self, gauge: Gauge, read: Callable[[], float]) -> Callable[[], None] | None:
        """Export ``read()`` as ``gauge``; returns what to call when the value changes (here none: read at scrape)."""
        gauge.set_function(read)
        return None

    def watch_expiries(self, sources: Callable[[], Mapping[str, Any]]) -> None:
        """Export each credential's time to its ``not_after``, read at scrape time (reloads included)."""
        self.registry.register(_ExpiryCollector(sources))

    def count_sequence(self, source: str, status: str) -> None:
        if status in ("gap", "repeat", "reset"):
            self.sequences.labels(self.source_label(source), status).inc()

    def source_label(self, source: str | None) -> str:
        if source is None:
            return NONE
        return source if source in self._events else OTHER

    def event_label(self, source: str | None, event: str | None) -> str:
        if event is None:
            return NONE
        known = self._events.get(source or "", frozenset())
        return event if event in known else OTHER

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        """This process stops serving (its lifespan ends)."""


_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


class SharedMetrics(Metrics):
    """One worker's metrics when ``receiver serve`` runs several (prometheus_client's multiprocess mode).

    Every worker writes its values to files under ``directory``; the worker that serves
    a scrape merges them all, so counters and histograms are totals over the workers,
    gauges follow their ``multiprocess_mode``. A gauge cannot be read at scrape time from
    another process, so each worker writes its own on every change. Credential expiries
    derive from the config alone: the serving worker computes them.
    """

    def __init__(self, events_by_source: Mapping[str, Collection[str]], directory: Path) -> None:
        if not getattr(values.ValueClass, "_multiprocess", False):
            # The value class is chosen when prometheus_client is first imported.
            msg = "PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported"
            raise RuntimeError(msg)
        self._in_flight = self._pending = 0
        self._directory = directory
        super().__init__(events_by_source)
        # The metrics above write to files; the scrape reads every worker's files instead
        # of this process's registry.
        self.registry = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(self.registry, path=str(directory))  # type: ignore[no-untyped-call]

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self._in_flight = value
        self._in_flight_gauge.set(value)

    @property
    def pending(self) -> int:
        return self._pending

    @pending.setter
    def pending(self, value: int) -> None:
        self._pending = value
        self._pending_gauge.set(value)

    def follow(self, gauge: Gauge, read: Callable[[], float]) -> Callable[[], None] | None:
        """Write ``read()`` to ``gauge`` now; the returned function writes it again, to be called on change."""

        def update() -> None:
            gauge.set(read())

        update()
        return update

    def exposition(self) -> bytes:
        self._forget_dead_workers()
        return generate_latest(self.registry)

    def close(self) -> None:
        """Drop this worker's live gauges (in flight, pending, breaker) from the totals."""
        mark_process_dead(os.getpid(), str(self._directory))  # type: ignore[no-untyped-call]

    def _forget_dead_workers(self) -> None:
        # A worker killed before its lifespan ended (OOM, a crash) left its live gauges
        # behind; uvicorn starts a replacement under another pid.
        for path in self._directory.iterdir():
            match = _LIVE_FILE.match(path.name)
            if match is not None and not _is_running(int(match.group(1))):
                mark_process_dead(int(match.group(1)), str(self._directory))  # type: ignore[no-untyped-call]


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


EXPIRY_WARNING_SECONDS = 14 * 86400


class _ExpiryCollector(Collector):
    """Credentials with a ``not_after``: seconds left, and how many expire within 14 days."""

    def __init__(self, sources: Callable[[], Mapping[str, Any]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        left = GaugeMetricFamily(
            "receiver_credential_expiry_seconds",
            "Seconds until a configured key or secret passes its not_after (negative: expired).",
            labels=["source", "method", "key_id"],
        )
        soon = GaugeMetricFamily(
            "receiver_credentials_expiring_soon",
            "Configured keys and secrets within 14 days of their not_after, or past it.",
            labels=["source"],
        )
        for source_id, source in self._sources().items():
            count = 0
            for expiry in source.auth.expiries():
                remaining = expiry.not_after - now
                left.add_metric([source_id, expiry.method, expiry.key_id], remaining)
                count += remaining < EXPIRY_WARNING_SECONDS
            soon.add_metric([source_id], count)
        yield left
        yield soon
