"""The delivery endpoint: the URL table, the body, and the pipeline's answer as JSON.

Callback URLs: ``POST /v1/callbacks/{source}/{event}``; device push messages:
``POST /v1/push/{source}[/{event}]``; dry runs ``POST /v1/dry-run/{source}/{event}``.
All feed the same pipeline, through ``receiver.gate`` (the order of the checks before
it). The probes, metrics and docs are in ``receiver.probes``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic_core import to_json as json_bytes
from starlette.types import Receive, Scope, Send

from receiver.errors import (
    AuthRequiredError,
    ClientClosedError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from receiver.events import Accepted, Delivery
from receiver.pipeline import Pipeline
from receiver.tracing import Tracing, trace_headers
from receiver.vendors.base import Answer

if TYPE_CHECKING:
    from receiver.admission import Admitted
    from receiver.sources import Source

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
    the headers scanned once. It is reached through ``receiver.gate``, which admitted
    the request and read its body; refusals are raised and answered there. With
    ``dry_run``, the delivery goes through every step and nothing is published.
    """

    def __init__(self, template: str, methods: Sequence[str] = ("POST",), *, dry_run: bool = False) -> None:
        self.template = template  # the path pattern: the URL table's entry and the tracing span's name
        self.methods = frozenset({*methods, "OPTIONS"})
        self.allow = ", ".join(sorted(self.methods))
        self.dry_run = dry_run

    def check_method(self, scope: Scope, source: Source) -> None:
        """GET only for a vendor that sends its messages as query strings; else 405."""
        if scope["method"] == "GET" and "" not in source.vendor.media_types:
            msg = f"GET is not allowed on {scope['path']}; this source's vendor posts its messages"
            raise MethodNotAllowedError(msg, ["OPTIONS", "POST"])

    async def __call__(self, scope: Scope, send: Send, delivery: Delivery, admitted: Admitted) -> None:
        pipeline: Pipeline = scope["state"]["pipeline"]
        tracing: Tracing = scope["state"]["tracing"]
        incoming = trace_headers(delivery.headers)
        if incoming or tracing.enabled:
            with tracing.server_span(f"{scope['method']} {self.template}", incoming, delivery.source_id):
                accepted = await pipeline.process(delivery, admitted=admitted, publish=not self.dry_run)
        else:  # nothing to trace: skip the context manager on the hot path
            accepted = await pipeline.process(delivery, admitted=admitted, publish=not self.dry_run)
        delivery.outcome.event_id = accepted.event_id or None
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

    async def options(self, scope: Scope, send: Send) -> None:
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


def check_admin(expected: bytes | None, given: bytes | None) -> None:
    """A dry run's admin token: 404 when dry runs are off, 401 when it is missing or wrong."""
    if expected is None:
        raise NotFoundError("dry runs are not enabled on this receiver")
    presented = hashlib.sha256(given or b"").digest()
    if given is None or not hmac.compare_digest(presented, expected):
        raise AuthRequiredError("a dry run needs the admin token in X-Dry-Run-Token")


class DeliveryTable:
    """The delivery URL patterns, the one table of them: matched by splitting the path, no regular expressions.

    Each template is literal segments followed by ``{name}`` segments; a path matches
    when its literal part is one of the table's and every named segment is non-empty.
    """

    def __init__(self, endpoints: Sequence[Deliver]) -> None:
        self.endpoints = tuple(endpoints)
        self._shapes: dict[tuple[int, tuple[str, ...]], tuple[Deliver, list[str]]] = {}
        for endpoint in self.endpoints:
            parts = endpoint.template.split("/")
            fixed = tuple(p for p in parts if not p.startswith("{"))
            names = [p[1:-1] for p in parts[len(fixed) :]]
            self._shapes[len(parts), fixed] = (endpoint, names)
        self._fixed = sorted({len(fixed) for _, fixed in self._shapes})

    def match(self, path: str) -> tuple[Deliver, dict[str, str]] | None:
        parts = path.split("/")
        for fixed in self._fixed:
            found = self._shapes.get((len(parts), tuple(parts[:fixed])))
            if found is not None and all(parts[fixed:]):
                endpoint, names = found
                return endpoint, dict(zip(names, parts[fixed:], strict=True))
        return None


DELIVERIES = DeliveryTable(
    [
        Deliver("/v1/callbacks/{source}/{event}"),
        Deliver("/v1/push/{source}", ["GET", "POST"]),  # Sigfox-style backends may send a GET query string
        Deliver("/v1/push/{source}/{event}", ["GET", "POST"]),
        Deliver("/v1/dry-run/{source}/{event}", dry_run=True),
    ]
)
