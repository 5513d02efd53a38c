"""Watching a receiver from threads while a probe attacks or loads it: /healthz, RSS, valid deliveries.

Each watcher is a thread with blocking sockets, so what it measures is the receiver's
delay and not the probe's own event loop being busy with the attack.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from rawhttp import Answer, blocking_exchange, pct_ms, request_bytes, rss_mib

HEALTHZ = request_bytes("GET", "/healthz")


@dataclass
class Delivery:
    """One valid delivery sent during the attack: its status (0: no answer), code, and seconds."""

    status: int
    code: str
    seconds: float


@dataclass
class Watch:
    """Probe ``/healthz`` every ``healthz_every`` s, sample RSS every 50 ms, and send ``deliver()`` every so often.

    ``deliver`` returns the bytes of one valid request (built fresh: a signature may need
    a new timestamp); it is sent on a new connection every ``deliver_every`` s, starting
    ``deliver_after`` s after the watch starts (or when ``begin_deliveries`` is called).
    """

    port: int
    pid: int
    healthz_every: float = 0.05
    healthz_timeout: float = 10.0
    deliver: Callable[[], bytes] | None = None
    deliver_every: float = 1.0
    deliver_after: float | None = 1.0  # None: once begin_deliveries() is called
    deliver_timeout: float = 30.0
    deliver_from: str = "127.0.0.1"  # the valid sender's address: another one than the attacker's, or the same
    healthz: list[float] = field(default_factory=list)  # seconds per answered probe
    healthz_failed: int = 0  # no 200 within healthz_timeout
    rss: list[float] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    rss_before: float = float("nan")
    rss_after: float = float("nan")
    _stop: threading.Event = field(default_factory=threading.Event)
    _go: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Self:
        self.rss_before = rss_mib(self.pid)
        self._threads = [threading.Thread(target=self._probe, daemon=True), threading.Thread(target=self._sample)]
        if self.deliver is not None:
            self._threads.append(threading.Thread(target=self._send, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.deliver_timeout + self.healthz_timeout + 5)
        self.rss_after = rss_mib(self.pid)

    def begin_deliveries(self) -> None:
        self._go.set()

    def _probe(self) -> None:
        while not self._stop.is_set():
            answer, seconds, _ = blocking_exchange(self.port, HEALTHZ, self.healthz_timeout)
            if answer is not None and answer.status == 200:
                self.healthz.append(seconds)
            else:
                self.healthz_failed += 1
                self.healthz.append(seconds)
            self._stop.wait(self.healthz_every)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_mib(self.pid))
            self._stop.wait(0.05)

    def _send(self) -> None:
        if self.deliver_after is None:
            while not self._go.wait(0.05):
                if self._stop.is_set():
                    return
        elif self._stop.wait(self.deliver_after):
            return
        if self.deliver is None:
            return
        while True:
            answer, seconds, error = blocking_exchange(
                self.port, self.deliver(), self.deliver_timeout, self.deliver_from
            )
            self.deliveries.append(Delivery(answer.status if answer else 0, code_of(answer) or error, seconds))
            if self._stop.wait(max(0.0, self.deliver_every - seconds)):
                return

    # The figures, once the watch has ended.

    @property
    def rss_peak(self) -> float:
        return max([x for x in self.rss if not math.isnan(x)] or [float("nan")])  # NaN: the process is gone

    def healthz_summary(self) -> str:
        slow = sum(1 for s in self.healthz if s > 0.2)
        return (
            f"/healthz {len(self.healthz)} probes: p50 {pct_ms(self.healthz, 50):.1f} ms, "
            f"p99 {pct_ms(self.healthz, 99):.1f} ms, max {pct_ms(self.healthz, 100):.1f} ms; "
            f"{slow} over 200 ms, {self.healthz_failed} failed (no 200 within {self.healthz_timeout:g} s)"
        )

    def deliveries_summary(self) -> str:
        if not self.deliveries:
            return "no valid delivery sent"
        ok = [d for d in self.deliveries if 200 <= d.status < 300]
        others = sorted({f"{d.status} {d.code}".strip() for d in self.deliveries if d not in ok})
        return (
            f"valid deliveries: {len(ok)} of {len(self.deliveries)} 2xx; first {self.deliveries[0].status} in "
            f"{self.deliveries[0].seconds * 1000:.0f} ms; max {max(d.seconds for d in self.deliveries) * 1000:.0f} ms"
            + (f"; others: {', '.join(others)}" if others else "")
        )


def code_of(answer: Answer | None) -> str:
    """The ``code`` of a JSON error body, else empty."""
    if answer is None or answer.status < 300:
        return ""
    try:
        body = answer.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""
