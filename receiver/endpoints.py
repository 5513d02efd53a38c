"""The HTTP surface: turn a request into a ``Delivery`` and the pipeline's answer into JSON.

Callback URLs: ``POST /v1/callbacks/{source}/{event}``; device push messages:
``POST /v1/push/{source}[/{event}]``. Both feed the same pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.errors import PayloadTooLargeError
from receiver.events import Delivery
from receiver.metrics import Metrics
from receiver.observe import Outcome
from receiver.pipeline import Pipeline
from receiver.publish import Publisher
from receiver.responses import json_response
from receiver.shutdown import Drain

Endpoint = Callable[[Request], Awaitable[Response]]
PUSH_EVENT = "push"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = f"the body is larger than {limit} bytes; split it or raise server.max_body_bytes"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def deliver(request: Request) -> Response:
    """A vendor callback or push message: answered 200 only after the event is durable."""
    received_at = time.time()
    pipeline: Pipeline = request.state.pipeline
    outcome: Outcome = request.state.outcome
    outcome.source = request.path_params["source"]
    outcome.event = request.path_params.get("event", PUSH_EVENT)
    body = await read_body(request, request.state.max_body_bytes)
    delivery = Delivery(
        source_id=outcome.source,
        event=outcome.event,
        body=body,
        content_type=request.headers.get("content-type", ""),
        authorization=request.headers.get("authorization"),
        received_at=received_at,
    )
    accepted = await pipeline.process(delivery)
    outcome.event_id = accepted.event_id
    return json_response(200, {"id": accepted.event_id})


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. No I/O, so a slow broker never restarts the pod."""
    del request
    return json_response(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: config loaded and the publisher can take events; the body names what fails."""
    publisher: Publisher = request.state.publisher
    drain: Drain = request.state.drain
    problems = {"shutdown": "draining" if drain.draining else None, publisher.name: await publisher.check()}
    checks = {"config": "ok", **{name: problem or "ok" for name, problem in problems.items()}}
    failing = [f"{name}: {problem}" for name, problem in problems.items() if problem is not None]
    if failing:
        body = {"code": "not_ready", "message": "; ".join(failing), "checks": checks}
        return json_response(503, body, {"Retry-After": "5"})
    return json_response(200, {"status": "ready", "checks": checks})


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics."""
    registry: Metrics = request.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)


def _with_options(endpoint: Endpoint, methods: Sequence[str]) -> Endpoint:
    """Answer OPTIONS with the path's ``Allow`` header, as iotcomms expects of every endpoint."""
    implied = {"HEAD"} if "GET" in methods else set()  # Starlette serves HEAD wherever GET is
    allow = ", ".join(sorted({*methods, *implied, "OPTIONS"}))

    async def handle(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=200, headers={"Allow": allow})
        return await endpoint(request)

    return handle


def route(path: str, endpoint: Endpoint, methods: Sequence[str]) -> Route:
    return Route(path, _with_options(endpoint, methods), methods=[*methods, "OPTIONS"])


ROUTES = [
    route("/v1/callbacks/{source}/{event}", deliver, ["POST"]),
    route("/v1/push/{source}", deliver, ["POST"]),
    route("/v1/push/{source}/{event}", deliver, ["POST"]),
    route("/healthz", healthz, ["GET"]),
    route("/readyz", readyz, ["GET"]),
    route("/metrics", metrics, ["GET"]),
]
