"""``TcpProxy``: a TCP proxy on 127.0.0.1 that can slow the traffic or cut it, for broker fault tests.

It runs its own event loop on a thread, so a test (and the app under a ``TestClient``)
can keep theirs. ``delay`` adds latency to every chunk in both directions; ``cut()``
closes every connection and refuses new ones until ``heal()``; ``silence()`` drops every
byte of the connections open now, without closing them (a peer gone without a reset),
while new connections pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self

from tests.support.kafka_broker import free_port


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self.delay = 0.0
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._silenced: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop
        ).result(10)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> None:
        """Close every connection now, and every new one at once, until ``heal``."""
        self._cut = True
        self._loop.call_soon_threadsafe(self._close_all)

    def silence(self) -> None:
        """From now on, what the open connections carry is dropped; they stay open."""
        self._loop.call_soon_threadsafe(lambda: self._silenced.update(self._writers))

    def heal(self) -> None:
        self._cut = False
        self.delay = 0.0

    async def _shutdown(self) -> None:
        """Close the listener and every connection, and wait until each is done: nothing left to the GC."""
        self._cut = True
        if self._server is not None:
            self._server.close()
        self._close_all()
        pending = [task for task in self._connections if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        await asyncio.sleep(0.05)  # the transports' connection_lost callbacks run

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._writers.discard(end)
                self._silenced.discard(end)
                end.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if writer in self._silenced:
                    continue
                writer.write(chunk)
                await writer.drain()
        writer.close()
