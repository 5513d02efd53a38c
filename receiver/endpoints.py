"""The HTTP surface: turn a request into a ``Delivery`` and the pipeline's answer into JSON.

Callback URLs: ``POST /v1/callbacks/{source}/{event}``; device push messages:
``POST /v1/push/{source}[/{event}]``. Both feed the same pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic_core import to_json as json_bytes
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from receiver.errors import PayloadTooLargeError
from receiver.events import Delivery, Outcome
from receiver.metrics import Metrics
from receiver.pipeline import Pipeline
from receiver.publish import Publisher
from receiver.responses import json_response
from receiver.shutdown import Drain
from receiver.tracing import Tracing, trace_headers

Endpoint = Callable[[Request], Awaitable[Response]]
PUSH_EVENT = "push"


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    too_large = f"the body is larger than {limit} bytes; split it or raise server.max_body_bytes"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(too_large)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(too_large)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Deliver:
    """A vendor callback or push message: answered 200 only after the event is durable.

    A raw ASGI endpoint, because this is the hot path: no Request or Response objects,
    the headers scanned once. Refusals are raised and answered by the app's handlers.
    """

    allow = "OPTIONS, POST"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"allow", self.allow.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        received_at = time.time()
        state = scope["state"]
        outcome: Outcome = state["outcome"]
        params = scope["path_params"]
        outcome.source = source = params["source"]
        outcome.event = event = params.get("event", PUSH_EVENT)
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins
        body = await read_body(receive, headers.get(b"content-length"), state["max_body_bytes"])
        delivery = Delivery(
            source_id=source,
            event=event,
            body=body,
            content_type=headers.get(b"content-type", b"").decode("latin-1"),
            headers=headers,
            client_ip=outcome.client_ip,
            received_at=received_at,
            outcome=outcome,
            query=dict(parse_qsl(scope["query_string"].decode("latin-1"))) if scope["query_string"] else {},
        )
        pipeline: Pipeline = state["pipeline"]
        tracing: Tracing = state["tracing"]
        incoming = trace_headers(headers)
        if incoming or tracing.enabled:
            with tracing.server_span(f"POST {scope['route'].path}", incoming, source):
                accepted = await pipeline.process(delivery)
        else:  # nothing to trace: skip the context manager on the hot path
            accepted = await pipeline.process(delivery)
        outcome.event_id = accepted.event_id
        answer = json_bytes({"id": accepted.event_id})
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        response_headers += [(k.lower().encode(), v.encode()) for k, v in accepted.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": answer})


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
    Route("/v1/callbacks/{source}/{event}", Deliver(), methods=["POST", "OPTIONS"]),
    Route("/v1/push/{source}", Deliver(), methods=["POST", "OPTIONS"]),
    Route("/v1/push/{source}/{event}", Deliver(), methods=["POST", "OPTIONS"]),
    route("/healthz", healthz, ["GET"]),
    route("/readyz", readyz, ["GET"]),
    route("/metrics", metrics, ["GET"]),
    route("/openapi.json", openapi, ["GET"]),
]
