"""Connection limits uvicorn lacks (a header-read timeout, a cap on open connections), and one write per answer.

uvicorn closes a connection idle between requests after ``timeout_keep_alive``, but has
no deadline for the headers of a request (a slowloris client sends them a byte at a
time) and no cap on open connections below the file-descriptor limit. This protocol is
uvicorn's httptools protocol with both: headers must be complete within
``header_timeout`` seconds of the connection or of the request's first byte, else the
client gets 408 with the JSON error body and the connection is closed; and past
``max_connections`` open connections, idle ones are closed first, then the new one.

The body's deadline is the delivery endpoint's own (``endpoints.read_body``).

uvicorn writes a response's status line and headers, then its body, each with its own
``write`` (a syscall each); ``OneWriteTransport`` holds the head until the body follows in the
same turn of the event loop and sends both in one.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any, ClassVar

from pydantic_core import to_json as json_bytes
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.errors import RequestTimeoutError
from receiver.settings import ServerSettings

_RESERVED_DESCRIPTORS = 64  # for the broker, the store, logs and the listening socket


def connection_cap(configured: int | None) -> int:
    """``server.max_connections``, or what the file-descriptor limit leaves room for."""
    if configured is not None:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(soft, 1 << 16) - _RESERVED_DESCRIPTORS)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a connection cap (class-wide settings)."""

    header_timeout: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1024

    _header_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def configure(cls, server: ServerSettings) -> None:
        """Set the limits from the settings; every worker process does it when it loads the app."""
        cls.header_timeout = server.header_timeout_seconds
        cls.max_connections = connection_cap(server.max_connections)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self._make_room()
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._headers_arrived()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_arrived(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        error = RequestTimeoutError(f"the request's headers did not arrive within {self.header_timeout:g} s")
        body = json_bytes(error.body())
        head = (
            f"HTTP/1.1 {error.status} Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _make_room(self) -> None:
        """Close idle connections (no request in progress) until under the cap; else refuse this one."""
        for other in list(self.connections):
            if len(self.connections) <= self.max_connections:
                return
            if other is not self and isinstance(other, HttpToolsProtocol) and _is_idle(other):
                other.transport.close()
                self.connections.discard(other)
        if len(self.connections) > self.max_connections:
            self.transport.close()


def _is_idle(protocol: HttpToolsProtocol) -> bool:
    return protocol.cycle is None or protocol.cycle.response_complete


class OneWriteTransport:
    """A transport that joins a response's head with the body written right after it.

    A write that looks like a response head is held; the next write sends both, and if
    none comes in this turn of the event loop (a ``100 Continue``, a streamed answer),
    the head goes out on its own at the next. Everything else is the transport's own.
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
