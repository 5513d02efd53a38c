"""The probes and documents: liveness, readiness, metrics and the OpenAPI document, apart from deliveries.

None of them reads a body or counts against a delivery limit; the request log keeps them quiet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.metrics import Metrics
from receiver.publish import Publisher
from receiver.responses import json_response
from receiver.shutdown import Drain

Endpoint = Callable[[Request], Awaitable[Response]]


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. No I/O, so a slow broker never restarts the pod."""
    del request
    return json_response(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: config loaded and the publisher can take events; the body names what fails."""
    publisher: Publisher = request.state.publisher
    drain: Drain = request.state.drain
    topic_check = request.state.topic_check
    problems = {"shutdown": "draining" if drain.draining else None, publisher.name: await publisher.check()}
    if topic_check is not None:
        problems["topics"] = topic_check.problem()
    # Shared state is listed but never fails readiness: every replica shares it, and pulling
    # them all out of the Service would turn answers (503 where a source fails closed, the
    # rest served) into refused connections.
    state_problem = await request.state.shared_state.check()
    checks = {
        "config": "ok",
        **{name: problem or "ok" for name, problem in problems.items()},
        "state": f"degraded: {state_problem}" if state_problem else "ok",
    }
    failing = [f"{name}: {problem}" for name, problem in problems.items() if problem is not None]
    if failing:
        body = {"code": "not_ready", "message": "; ".join(failing), "checks": checks}
        return json_response(503, body, {"Retry-After": "5"})
    return json_response(200, {"status": "ready", "checks": checks})


async def openapi(request: Request) -> Response:
    """The OpenAPI document of this configuration, generated at startup."""
    document: bytes = request.state.openapi
    return Response(document, media_type="application/json")


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
    route("/healthz", healthz, ["GET"]),
    route("/readyz", readyz, ["GET"]),
    route("/metrics", metrics, ["GET"]),
    route("/openapi.json", openapi, ["GET"]),
]
