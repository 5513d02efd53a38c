"""Connection limits uvicorn lacks, step 1 of the edge (``receiver.gate``), and one write per answer.

uvicorn closes a connection idle between requests after ``timeout_keep_alive``, but has
no deadline for the headers of a request (a slowloris client sends them a byte at a
time), no bound on the header bytes it buffers before the app can judge them, and no
cap on open connections below the file-descriptor limit. This protocol is uvicorn's
httptools protocol with all three:

- headers must be complete within ``header_timeout`` seconds of the connection or of
  the request's first byte, else 408 with the JSON error body and the connection is
  closed; on a pipelined connection whose previous answer is still being written, the
  connection is closed once that answer is out instead (a 408 never replaces it);
- the bytes fed to the parser while a request's headers are incomplete are counted:
  past ``max_header_bytes`` (plus room for the request line) the client gets 431 and
  the connection is closed, before the header completes, so an endless header costs at
  most one read's worth of memory;
- past ``max_connections`` open connections, idle ones are closed first, then the new one;
  and while the event loop runs later than ``max_loop_lag`` (``LoopLag``), a new
  connection is answered 503 ``overloaded`` and closed at once: refusing at accept is
  better than answering after seconds.

When the headers are complete, the loop time is stamped into the scope (``ARRIVED``),
so the gate can shed a request that waited too long before the app saw it. Refusals made
here reach the request log through ``refusal_hooks`` (status, code, client address).

The body's deadline is the delivery endpoint's own (``endpoints.read_body``).

uvicorn writes a response's status line and headers, then its body, each with its own
``write`` (a syscall each); ``OneWriteTransport`` holds the head until the body follows in the
same turn of the event loop and sends both in one.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic_core import to_json as json_bytes
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.errors import HeadersTooLargeError, OverloadedError, RequestError, RequestTimeoutError
from receiver.settings import ServerSettings

_RESERVED_DESCRIPTORS = 64  # for the broker, the store, logs and the listening socket
_REQUEST_LINE_ROOM = 8192  # the request line (method, target, version) beside the header bytes
ARRIVED = "receiver.arrived"  # scope key: loop.time() when the request's headers were complete

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class LoopLag:
    """How late the event loop runs: a tick every ``interval`` seconds measures its own delay."""

    interval = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lag = 0.0
        self._due = loop.time() + self.interval
        loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.lag = max(0.0, now - self._due)
        self._due = now + self.interval
        self.loop.call_at(self._due, self._tick)


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
    max_header_bytes: ClassVar[int] = 16384 + _REQUEST_LINE_ROOM
    max_loop_lag: ClassVar[float] = 0.5
    refusal_hooks: ClassVar[list[Callable[[int, str, str], None]]] = []  # the app's request log
    lags: ClassVar[dict[asyncio.AbstractEventLoop, LoopLag]] = {}

    _header_deadline: asyncio.TimerHandle | None = None
    _header_bytes = 0

    @classmethod
    def configure(cls, server: ServerSettings) -> None:
        """Set the limits from the settings; every worker process does it when it loads the app."""
        cls.header_timeout = server.header_timeout_seconds
        cls.max_connections = connection_cap(server.max_connections)
        cls.max_header_bytes = server.max_header_bytes + _REQUEST_LINE_ROOM
        cls.max_loop_lag = server.max_loop_lag_ms / 1000 if server.max_loop_lag_ms else float("inf")

    @classmethod
    def report_refusals_to(cls, hook: Callable[[int, str, str], None]) -> None:
        """Send every refusal made here (status, code, client address) to ``hook``, in place of earlier ones."""
        cls.refusal_hooks[:] = [hook]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))  # type: ignore[arg-type]
        lag = self.lags.get(self.loop) or self.lags.setdefault(self.loop, LoopLag(self.loop))
        if lag.lag > self.max_loop_lag:
            msg = f"this receiver is behind (its event loop runs {lag.lag * 1000:.0f} ms late)"
            self._refuse(OverloadedError(msg))
            return
        if len(self.connections) > self.max_connections:
            self._make_room()
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused here already: nothing more is parsed
        counting = self._header_deadline is not None  # a request's headers are incomplete
        super().data_received(data)
        if counting and self._header_deadline is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._headers_arrived()
                limit = self.max_header_bytes - _REQUEST_LINE_ROOM
                self._refuse(HeadersTooLargeError(f"the request's headers are larger than {limit} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        self.scope[ARRIVED] = self.loop.time()  # type: ignore[literal-required]
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._headers_arrived()
        self._header_bytes = 0
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_arrived(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        self._refuse(RequestTimeoutError(f"the request's headers did not arrive within {self.header_timeout:g} s"))

    def _refuse(self, error: RequestError) -> None:
        """Answer ``error`` with the JSON body and close; never on top of an answer still being written."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # uvicorn closes the connection once that answer is out
            self.flow.pause_reading()
            return
        body = json_bytes(error.body())
        extra = "".join(
            f"{name.lower()}: {value}\r\n" for name, value in error.headers().items() if name != "Connection"
        )
        head = (
            f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
        for hook in self.refusal_hooks:
            hook(error.status, error.code, str((self.client or ("", 0))[0]))

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
