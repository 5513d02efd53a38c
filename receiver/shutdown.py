"""Draining on SIGTERM: readiness turns 503 at once, then uvicorn's own shutdown runs.

uvicorn owns the signals and drains in-flight requests (``timeout_graceful_shutdown``)
before the lifespan closes the publisher, which flushes the producer. This module only
chains in front of uvicorn's handler: it marks the app as draining so ``/readyz``
answers 503, and can hold uvicorn's shutdown back for ``drain_seconds`` so a load
balancer stops routing here before the listening socket closes.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType


@dataclass(slots=True)
class Drain:
    draining: bool = False


@contextmanager
def drain_on_signals(drain: Drain, delay: float) -> Iterator[None]:
    """While active, SIGTERM/SIGINT set ``drain.draining`` before the server's handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be caught on the main thread (not so under a test client)
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(sig: int, frame: FrameType | None) -> None:
        first = not drain.draining
        drain.draining = True
        chained = previous[signal.Signals(sig)]
        if not callable(chained):
            return
        if first and sig == signal.SIGTERM and delay > 0:
            loop.call_soon_threadsafe(loop.call_later, delay, chained, sig, None)
        else:
            chained(sig, frame)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is handle:
                signal.signal(sig, handler)
