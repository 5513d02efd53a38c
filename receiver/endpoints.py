"""The HTTP surface: turn a request into a ``Delivery`` and the pipeline's answer into JSON.

Callback URLs: ``POST /v1/callbacks/{source}/{event}``; device push messages:
``POST /v1/push/{source}[/{event}]``. Both feed the same pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic_core import to_json as json_bytes
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.errors import (
    AuthRequiredError,
    ClientClosedError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
)
from receiver.events import Accepted, Delivery, Outcome
from receiver.intake import query_fields
from receiver.metrics import Metrics
from receiver.pipeline import Pipeline
from receiver.publish import Publisher
from receiver.responses import json_response, send_error
from receiver.shutdown import Drain
from receiver.tracing import Tracing, trace_headers
from receiver.vendors.base import Answer

Endpoint = Callable[[Request], Awaitable[Response]]
PUSH_EVENT = "push"


async def read_body(
    receive: Receive, declared: bytes | None, limit: int, within: float, loop: asyncio.AbstractEventLoop
) -> bytes:
    """The whole body within ``within`` seconds, refused with 413 as soon as it passes ``limit`` bytes."""
    too_large = f"the body is larger than {limit} bytes; split it or raise server.max_body_bytes"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(too_large)
    # A plain timer rather than asyncio.timeout: the body has usually arrived with the
    # headers, and this is the hot path.
    task = asyncio.current_task(loop)  # given the loop: no getpid syscall on Python 3.11
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        if task is not None:
            task.cancel()

    deadline = loop.call_later(within, expire)
    try:
        return await _read_chunks(receive, limit, too_large)
    except asyncio.CancelledError as exc:
        if not expired:
            raise
        if task is not None:
            task.uncancel()
        msg = f"the body did not arrive within {within:g} s; send it at once"
        raise RequestTimeoutError(msg) from exc
    finally:
        deadline.cancel()


async def _read_chunks(receive: Receive, limit: int, too_large: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedError("the client closed the connection before its body arrived")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(too_large)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Deliver:
    """A vendor callback or push message: answered 2xx only after the event is durable.

    A raw ASGI endpoint, because this is the hot path: no Request or Response objects,
    the headers scanned once. Refusals are raised and answered by the app's handlers.
    With ``dry_run``, the delivery goes through every step and nothing is published.
    """

    def __init__(self, template: str, methods: Sequence[str] = ("POST",), *, dry_run: bool = False) -> None:
        self.template = template  # the path pattern, for the tracing span's name
        self.methods = frozenset({*methods, "OPTIONS"})
        self.allow = ", ".join(sorted(self.methods))
        self.dry_run = dry_run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await self._options(scope, send)
            return
        received_at = time.time()
        state = scope["state"]
        outcome: Outcome = state["outcome"]
        params = scope["path_params"]
        outcome.source = source = params["source"]
        outcome.event = event = params.get("event", PUSH_EVENT)
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins
        if scope["method"] == "GET" and not _takes_queries(state["pipeline"], source):
            msg = f"GET is not allowed on {scope['path']}; this source's vendor posts its messages"
            raise MethodNotAllowedError(msg, ["OPTIONS", "POST"])
        if self.dry_run:
            _check_admin(state["dry_run_token"], headers.get(b"x-dry-run-token"))
        body = await read_body(
            receive, headers.get(b"content-length"), state["max_body_bytes"], state["body_timeout"], state["loop"]
        )
        delivery = Delivery(
            source_id=source,
            event=event,
            body=body,
            content_type=headers.get(b"content-type", b"").decode("latin-1"),
            headers=headers,
            client_ip=outcome.client_ip,
            received_at=received_at,
            outcome=outcome,
            query=query_fields(scope["query_string"]) if scope["query_string"] else {},
        )
        pipeline: Pipeline = state["pipeline"]
        tracing: Tracing = state["tracing"]
        incoming = trace_headers(headers)
        if incoming or tracing.enabled:
            with tracing.server_span(f"{scope['method']} {self.template}", incoming, source):
                accepted = await pipeline.process(delivery, publish=not self.dry_run)
        else:  # nothing to trace: skip the context manager on the hot path
            accepted = await pipeline.process(delivery, publish=not self.dry_run)
        outcome.event_id = accepted.event_id or None
        status, payload = _answer(accepted, self.dry_run)
        response_headers = [(k.lower().encode(), v.encode()) for k, v in accepted.headers.items()]
        if accepted.event_id:
            response_headers.append((b"x-event-id", accepted.event_id.encode()))
        if payload is not None:
            response_headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload or b""})

    async def _options(self, scope: Scope, send: Send) -> None:
        """``Allow``, and the CloudEvents webhook validation handshake for allowed origins."""
        allow = self.allow
        if "GET" in allow and not _takes_queries(scope["state"]["pipeline"], scope["path_params"]["source"]):
            allow = "OPTIONS, POST"
        headers = [(b"allow", allow.encode())]
        origin = next((v for k, v in scope["headers"] if k == b"webhook-request-origin"), None)
        if origin is not None:
            pipeline: Pipeline = scope["state"]["pipeline"]
            source = pipeline.sources.get(scope["path_params"]["source"])
            allowed = source.settings.webhook_origins if source is not None else []
            name = origin.decode("latin-1").strip()
            if name in allowed or ("*" in allowed and name):
                headers += [(b"webhook-allowed-origin", name.encode()), (b"webhook-allowed-rate", b"*")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _takes_queries(pipeline: Pipeline, source_id: str) -> bool:
    """Does this source's vendor send messages as GET query strings (Sigfox-style backends)?"""
    source = pipeline.sources.get(source_id)
    return source is not None and "" in source.vendor.media_types


def _answer(accepted: Accepted, dry_run: bool) -> tuple[int, bytes | None]:
    """The response: a dry run's report, the vendor's expected answer, or the event id(s)."""
    if dry_run:
        report = {
            "events": [e.to_dict() for e in accepted.events],
            "records": [
                {
                    "topic": r.topic,
                    "key": r.key.decode(errors="replace"),
                    "headers": {k: v.decode() for k, v in r.headers},
                }
                for r in accepted.records
            ],
            "topics": list(accepted.topics),
        }
        return 200, json_bytes(report)
    if accepted.answer is not None:
        answer: Answer = accepted.answer
        return answer.status, None if answer.body is None else json_bytes(answer.body)
    if accepted.status == 202:
        return 202, json_bytes({"code": accepted.code, "message": "accepted and kept on the dead-letter topic"})
    if accepted.event_ids is not None:
        return 200, json_bytes({"ids": list(accepted.event_ids)})
    return 200, json_bytes({"id": accepted.event_id})


def _check_admin(expected: bytes | None, given: bytes | None) -> None:
    if expected is None:
        raise NotFoundError("dry runs are not enabled on this receiver")
    presented = hashlib.sha256(given or b"").digest()
    if given is None or not hmac.compare_digest(presented, expected):
        raise AuthRequiredError("a dry run needs the admin token in X-Dry-Run-Token")


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


CALLBACK = Deliver("/v1/callbacks/{source}/{event}")
PUSH = Deliver("/v1/push/{source}", ["GET", "POST"])  # Sigfox-style backends may send a GET query string
PUSH_NAMED = Deliver("/v1/push/{source}/{event}", ["GET", "POST"])
DRY_RUN = Deliver("/v1/dry-run/{source}/{event}", dry_run=True)


class DeliveryDispatch:
    """The delivery paths straight to their endpoint: no router and no exception middleware on the hot path.

    ``/v1/callbacks/{source}/{event}``, ``/v1/push/{source}[/{event}]`` and
    ``/v1/dry-run/{source}/{event}`` are matched by splitting the path; refusals are
    answered here, in the same JSON shape as the app's handlers. Everything else, and
    any bug, goes on to Starlette as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _delivery_for(scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, params = found
        scope["path_params"] = params
        try:
            if scope["method"] not in endpoint.methods:
                msg = f"{scope['method']} is not allowed on {scope['path']}; use {endpoint.allow}"
                raise MethodNotAllowedError(msg, sorted(endpoint.methods))
            await endpoint(scope, receive, send)
        except RequestError as exc:
            await send_error(scope, send, exc)


def _delivery_for(path: str) -> tuple[Deliver, dict[str, str]] | None:
    parts = path.split("/")  # "", "v1", family, source[, event]
    if len(parts) not in (4, 5) or parts[1] != "v1" or not all(parts[3:]):
        return None
    family = parts[2]
    if len(parts) == 5:
        endpoint = {"callbacks": CALLBACK, "push": PUSH_NAMED, "dry-run": DRY_RUN}.get(family)
        return None if endpoint is None else (endpoint, {"source": parts[3], "event": parts[4]})
    return (PUSH, {"source": parts[3]}) if family == "push" else None


ROUTES = [
    # Matched first by DeliveryDispatch; listed so the route table stays whole.
    Route(CALLBACK.template, CALLBACK, methods=["POST", "OPTIONS"]),
    Route(PUSH.template, PUSH, methods=["GET", "POST", "OPTIONS"]),
    Route(PUSH_NAMED.template, PUSH_NAMED, methods=["GET", "POST", "OPTIONS"]),
    Route(DRY_RUN.template, DRY_RUN, methods=["POST", "OPTIONS"]),
    route("/healthz", healthz, ["GET"]),
    route("/readyz", readyz, ["GET"]),
    route("/metrics", metrics, ["GET"]),
    route("/openapi.json", openapi, ["GET"]),
]
