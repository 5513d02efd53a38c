"""The real Redis for tests: one per session, and a key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real ``redis-server`` for the session; one that cannot start fails the tests."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, so each test sees only its own state."""
    return f"t{uuid.uuid4().hex[:12]}:"
