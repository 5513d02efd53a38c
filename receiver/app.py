"""The application factory: all wiring happens in ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

from pydantic_core import to_json as json_bytes
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from receiver.audit import AuditTrail
from receiver.connections import GuardedHttpToolsProtocol
from receiver.errors import RequestError
from receiver.gate import DeliveryGate, HeaderLimits
from receiver.logs import configure_logging
from receiver.metrics import Metrics, SharedMetrics
from receiver.openapi import build_openapi
from receiver.pipeline import Pipeline, build_pipeline
from receiver.probes import ROUTES
from receiver.publish import Publisher, open_publisher
from receiver.reload import Reloader, watched_files
from receiver.request_log import ObserveRequests, connection_refusals
from receiver.responses import on_http_error, on_request_error, on_unexpected_error
from receiver.settings import Settings, config_path_from_env, load_settings, metrics_dir_from_env
from receiver.shutdown import Drain, drain_on_signals
from receiver.sources import build_sources
from receiver.state import State as SharedState
from receiver.state import build_state
from receiver.topics import TopicCheck, target_topics
from receiver.tracing import Tracing

log = logging.getLogger("receiver")


class State(TypedDict):
    """What every request sees as ``request.state``."""

    pipeline: Pipeline
    publisher: Publisher
    metrics: Metrics
    drain: Drain
    tracing: Tracing
    reloader: Reloader | None
    openapi: bytes
    topic_check: TopicCheck | None
    shared_state: SharedState
    loop: asyncio.AbstractEventLoop  # the one the requests run on, taken once


def create_app(
    settings: Settings,
    *,
    span_exporter: Any = None,
    reload_settings: Callable[[], Settings] | None = None,
    publisher: Publisher | None = None,
    metrics_dir: Path | None = None,
) -> Starlette:
    """Build the app; bad settings (unreadable keys, secrets) raise ``ConfigError`` now.

    ``reload_settings`` loads fresh settings for SIGHUP and the file watch (the CLI
    passes the config file's loader); ``span_exporter`` replaces the configured
    OpenTelemetry exporter (tests pass an in-memory one); ``publisher`` replaces the
    configured Kafka producer or store (tests of the pipeline pass an in-memory one);
    ``metrics_dir`` makes this app one worker among several, whose metrics are merged
    through files there.
    """
    sources = build_sources(settings)
    tracing = Tracing(settings.tracing, span_exporter)
    events = {source.id: source.vendor.events for source in sources.values()}
    metrics = Metrics(events) if metrics_dir is None else SharedMetrics(events, metrics_dir)
    prefix = settings.kafka.topic_prefix
    openapi = json_bytes(build_openapi(sources, dry_run=settings.dry_run.enabled))
    audit = (
        AuditTrail(
            settings.audit.topic or f"{prefix}.audit",
            unauthenticated_per_second=settings.audit.unauthenticated_per_second,
            summary_interval=settings.audit.summary_interval_seconds,
            flush_interval=settings.audit.flush_interval_seconds,
            is_known=lambda source: source in (pipeline_ref[0].sources if pipeline_ref else sources),
        )
        if settings.audit.enabled
        else None
    )
    topic_check = (
        TopicCheck(settings, target_topics(settings, sources))
        if settings.kafka.bootstrap_servers and settings.kafka.topics.check
        else None
    )
    pipeline_ref: list[Pipeline] = []
    metrics.watch_expiries(lambda: pipeline_ref[0].sources if pipeline_ref else sources)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        del app
        drain = Drain()
        async with _given(publisher) if publisher is not None else open_publisher(settings) as opened:
            # Read at scrape time, or written on change when another worker may serve the scrape.
            store: Any = opened
            if getattr(store, "depth", None) is not None:
                store.on_change = metrics.follow(metrics.store_depth, lambda: float(store.depth))
            breaker = getattr(opened, "breaker", None)
            if breaker is not None:
                breaker.on_change = metrics.follow(metrics.breaker_open, lambda: float(breaker.is_open))
            shared = build_state(
                settings.state,
                lease_seconds=settings.kafka.publish_timeout_seconds + 5,
                on_fallback=metrics.count_state_fallback,
            )
            await shared.start()
            pipeline = build_pipeline(settings, sources, opened, metrics, tracing, state=shared)
            published = pipeline.publisher
            pipeline_ref.append(pipeline)
            reloader = None
            if reload_settings is not None:
                reloader = Reloader(reload_settings, pipeline.replace_sources, watched_files(settings, None))
            if audit is not None:
                audit.start(published)
            if topic_check is not None:
                topic_check.start()
            log.info("receiver.started", extra={"sources": len(sources), "publisher": published.name})
            async with _maybe(reloader, settings.server.reload_interval_seconds):
                with drain_on_signals(drain, settings.server.drain_seconds):
                    yield State(
                        pipeline=pipeline,
                        publisher=published,
                        metrics=metrics,
                        drain=drain,
                        tracing=tracing,
                        reloader=reloader,
                        openapi=openapi,
                        topic_check=topic_check,
                        shared_state=shared,
                        loop=asyncio.get_running_loop(),
                    )
            log.info("receiver.stopping", extra={"flushing": ["audit", published.name]})
            if topic_check is not None:
                await topic_check.stop()
            if audit is not None:  # half of the Kafka shutdown budget; the producer's flush gets the rest
                await audit.stop(published, within=settings.kafka.shutdown_timeout_seconds / 2)
            await shared.close()
        tracing.shutdown()
        metrics.close()
        log.info("receiver.stopped")

    GuardedHttpToolsProtocol.report_refusals_to(connection_refusals(metrics))
    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        # The edge in order (receiver.gate): observe every request; header limits; then, for
        # deliveries, waiting time, admission, body, in-flight slot; the rest to the router.
        middleware=[
            Middleware(ObserveRequests, metrics=metrics, audit=audit, trusted_proxies=settings.server.trusted_proxies),
            Middleware(
                HeaderLimits,
                max_header_bytes=settings.server.max_header_bytes,
                max_headers=settings.server.max_headers,
            ),
            Middleware(DeliveryGate, settings=settings, metrics=metrics),
        ],
        exception_handlers={
            RequestError: on_request_error,
            HTTPException: on_http_error,
            Exception: on_unexpected_error,
        },
    )


@asynccontextmanager
async def _given(publisher: Publisher) -> AsyncIterator[Publisher]:
    yield publisher


@asynccontextmanager
async def _maybe(reloader: Reloader | None, interval: float) -> AsyncIterator[None]:
    if reloader is None:
        yield
        return
    async with reloader.running(interval):
        yield


def app_from_environment() -> Starlette:
    """uvicorn's factory for worker processes: the config path comes from ``RECEIVER_CONFIG``."""
    path = config_path_from_env()
    settings = load_settings(path)
    configure_logging(settings.server.log_level, settings.server.log_format)
    GuardedHttpToolsProtocol.configure(settings.server)  # this worker's connection limits
    app = create_app(settings, reload_settings=lambda: load_settings(path), metrics_dir=metrics_dir_from_env())
    # What startup built (settings, keys, models, routes) lives as long as the process:
    # freeze it out of the cycle collector's scans, and run the young-generation pass less
    # often, since every request allocates many short-lived containers.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    return app
