"""The one readiness wait: poll ``/readyz`` until the receiver can publish."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp


def is_ready(answer: httpx.Response) -> bool:
    return answer.status_code == 200


def wait_ready(
    client: httpx.Client,
    *,
    until: Callable[[httpx.Response], bool] = is_ready,
    timeout: float = 60.0,
    gone: Callable[[], str | None] = lambda: None,
) -> httpx.Response:
    """Poll ``/readyz`` until ``until`` holds for its answer (by default: 200), and return that answer.

    The producer connects in the background, so an app that has started is not yet ready.
    ``client`` is a ``TestClient`` (lifespan running) or an ``httpx`` client on a server
    process; connection errors count as not ready. ``gone`` says why the server process
    died (``None`` while it runs), so that a crash fails the test at once, with its reason.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = client.get("/readyz")
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if until(answer):
                return answer
            last = f"{answer.status_code} {answer.text}"
        if (why := gone()) is not None:
            pytest.fail(f"the receiver exited before it was ready: {why}")
        if time.monotonic() > deadline:
            pytest.fail(f"the receiver was not ready within {timeout:.0f}s; /readyz answered {last}")
        time.sleep(0.2)


@contextmanager
def ready_client(app: ASGIApp, *, timeout: float = 60.0, **options: Any) -> Iterator[TestClient]:
    """A ``TestClient`` on ``app`` with the lifespan running, once ``/readyz`` answers 200."""
    with TestClient(app, **options) as client:
        wait_ready(client, timeout=timeout)
        yield client
