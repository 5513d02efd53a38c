"""The application factory: all wiring happens in ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from receiver.endpoints import ROUTES
from receiver.errors import RequestError
from receiver.pipeline import Pipeline
from receiver.publish import Publisher, open_publisher
from receiver.responses import on_http_error, on_request_error, on_unexpected_error
from receiver.settings import Settings, config_path_from_env, load_settings
from receiver.sources import build_sources

log = logging.getLogger("receiver")


class State(TypedDict):
    """What every request sees as ``request.state``."""

    pipeline: Pipeline
    publisher: Publisher
    max_body_bytes: int


def create_app(settings: Settings) -> Starlette:
    """Build the app; bad settings (unreadable keys, secrets) raise ``ConfigError`` now."""
    sources = build_sources(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        del app
        async with open_publisher(settings) as publisher:
            log.info("receiver started: %d source(s), publishing to %s", len(sources), publisher.name)
            pipeline = Pipeline(sources, publisher, settings.kafka.topic_prefix)
            yield State(pipeline=pipeline, publisher=publisher, max_body_bytes=settings.server.max_body_bytes)
        log.info("receiver stopped: publisher flushed and closed")

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            RequestError: on_request_error,
            HTTPException: on_http_error,
            Exception: on_unexpected_error,
        },
    )


def app_from_environment() -> Starlette:
    """uvicorn's factory for worker processes: the config path comes from ``RECEIVER_CONFIG``."""
    return create_app(load_settings(config_path_from_env()))
