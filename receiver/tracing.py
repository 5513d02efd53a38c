"""Trace context from the sender to the Kafka record: W3C ``traceparent`` always, spans optionally.

Without tracing (the default) a valid incoming ``traceparent`` is passed through to the
record headers unchanged, so consumers can continue the sender's trace at no cost.
With ``tracing.enabled`` and the ``otel`` extra installed, each delivery gets a server
span and each publish a producer span; the record then carries the producer span's
context. OpenTelemetry is imported only when enabled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from receiver.errors import ConfigError
from receiver.settings import TracingSettings

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_incoming: ContextVar[tuple[tuple[str, bytes], ...]] = ContextVar("incoming_trace", default=())


def trace_headers(headers: Mapping[bytes, bytes]) -> tuple[tuple[str, bytes], ...]:
    """The request's W3C trace context headers, when ``traceparent`` is well formed."""
    parent = headers.get(b"traceparent")
    if parent is None or not _TRACEPARENT.match(parent.decode("latin-1")):
        return ()
    state = headers.get(b"tracestate")
    return (("traceparent", parent),) if state is None else (("traceparent", parent), ("tracestate", state))


class Tracing:
    """Spans around a delivery and its publish; a pass-through when disabled."""

    def __init__(self, settings: TracingSettings, exporter: Any = None) -> None:
        self._tracer: Any = None
        if not settings.enabled:
            return
        try:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - optional extra
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        except ImportError as exc:
            msg = "tracing.enabled: install the otel extra (pip install 'iot-receiver[otel]')"
            raise ConfigError([msg]) from exc
        if exporter is None:
            exporter = _exporter(settings.exporter)
        provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("receiver")

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @staticmethod
    def incoming() -> tuple[tuple[str, bytes], ...]:
        """The sender's trace headers of the delivery being handled (pass-through mode)."""
        return _incoming.get()

    @contextmanager
    def server_span(self, name: str, incoming: tuple[tuple[str, bytes], ...], source: str) -> Iterator[None]:
        """Around one delivery: a SERVER span continuing the sender's trace."""
        token = _incoming.set(incoming)
        try:
            if self._tracer is None:
                yield
                return
            from opentelemetry.trace import SpanKind  # noqa: PLC0415
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

            parent = TraceContextTextMapPropagator().extract({k: v.decode("latin-1") for k, v in incoming})
            with self._tracer.start_as_current_span(
                name, context=parent, kind=SpanKind.SERVER, attributes={"receiver.source": source}
            ):
                yield
        finally:
            _incoming.reset(token)

    @contextmanager
    def producer_span(self, topics: Sequence[str]) -> Iterator[tuple[tuple[str, bytes], ...]]:
        """Around one publish: yields the trace headers the records must carry."""
        if self._tracer is None:
            yield _incoming.get()
            return
        from opentelemetry.propagate import inject  # noqa: PLC0415
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        attributes = {"messaging.system": "kafka", "messaging.destination.name": ",".join(sorted(set(topics)))}
        with self._tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER, attributes=attributes):
            carrier: dict[str, str] = {}
            inject(carrier)
            yield tuple((k, v.encode()) for k, v in carrier.items())

    def shutdown(self) -> None:
        if self._tracer is not None:
            self._provider.shutdown()


def _exporter(kind: str) -> Any:
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        return OTLPSpanExporter()  # endpoint and headers from the standard OTEL_EXPORTER_OTLP_* variables
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    return None
