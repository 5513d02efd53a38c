"""Every response body the receiver writes, and the one place errors become responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

from receiver.errors import MethodNotAllowedError, NotFoundError, RequestError

log = logging.getLogger("receiver.http")


def json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(to_json(body), status_code=status, headers=headers, media_type="application/json")


def error_response(request: Request, exc: RequestError) -> Response:
    """The JSON error body; the code and reason also go to the request's log line and metrics."""
    outcome = getattr(request.state, "outcome", None)
    if outcome is not None:
        outcome.code, outcome.reason = exc.code, exc.message
    return json_response(exc.status, exc.body(), {**exc.headers(), **exc.extra_headers})


async def send_error(scope: Scope, send: Send, exc: RequestError) -> None:
    """The same JSON error, written on a raw ASGI channel (the hot path and the request log's refusals)."""
    outcome = scope.get("state", {}).get("outcome")
    if outcome is not None:
        outcome.code, outcome.reason = exc.code, exc.message
    body = to_json(exc.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in {**exc.headers(), **exc.extra_headers}.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def on_request_error(request: Request, exc: Exception) -> Response:
    """A refusal the pipeline raised."""
    if not isinstance(exc, RequestError):  # registered for RequestError only; anything else is a bug
        return await on_unexpected_error(request, exc)
    return error_response(request, exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Routing's own 404 and 405, in the receiver's error shape."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return await on_unexpected_error(request, exc)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        methods = [m.strip() for m in allow.split(",") if m.strip()]
        msg = f"{request.method} is not allowed on {request.url.path}; use {', '.join(methods)}"
        return error_response(request, MethodNotAllowedError(msg, methods))
    if exc.status_code == 404:
        return error_response(request, NotFoundError(f"nothing is served at {request.url.path}; see the README"))
    return json_response(exc.status_code, {"code": "http_error", "message": exc.detail})


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: log it with its traceback, answer 500 without details."""
    log.error("receiver.internal_error", exc_info=exc, extra={"path": request.url.path})
    outcome = getattr(request.state, "outcome", None)
    if outcome is not None:
        outcome.code = "internal_error"
    body = {"code": "internal_error", "message": "the receiver failed unexpectedly; the error was logged"}
    return json_response(500, body)
