"""The benchmark's baseline: the cheapest Starlette POST handler, served exactly like the receiver.

Whatever the receiver costs beyond this (JWT, validation, CloudEvent, Kafka ack) is the
receiver's own overhead; what both cost is Starlette, uvicorn and the HTTP parser.

    python -m uvicorn bare_app:app --app-dir bench --port 8000 --no-access-log
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from starlette.requests import Request


async def echo(request: Request) -> Response:
    """Read the whole body, as the receiver must, and answer a small JSON object."""
    body = await request.body()
    return JSONResponse({"ok": True, "bytes": len(body)})


app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
