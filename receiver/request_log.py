"""The request log: request id, the canonical log line, the request metrics and the audit record.

An ASGI middleware around the whole app. It only observes: it refuses nothing (the
refusals before the body are ``receiver.gate``'s). Endpoints and error handlers fill in
the request's ``Outcome`` (source, event, code, event id); when the response is done,
one log line and the metrics are written from it.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence

from pydantic import IPvAnyNetwork
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.admission import client_address
from receiver.audit import AuditTrail, RequestFacts
from receiver.errors import auth_codes
from receiver.events import Outcome
from receiver.metrics import Metrics

log = logging.getLogger("receiver.request")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
AUTH_CODES = auth_codes()


# A random per-process prefix and a counter: unique across replicas, no syscall per request.
_PROCESS_PREFIX = secrets.token_hex(8)
_generated_ids = (f"{_PROCESS_PREFIX}{n:016x}" for n in itertools.count(1))


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    return next(_generated_ids)


class ObserveRequests:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        audit: AuditTrail | None = None,
        trusted_proxies: Sequence[IPvAnyNetwork] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.audit = audit
        self.trusted = list(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        outcome = Outcome(request_id(scope), client_ip=self._client(scope))
        scope.setdefault("state", {})["outcome"] = outcome
        status = 500
        header = (b"x-request-id", outcome.request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight -= 1
            self._record(scope, outcome, status, time.perf_counter() - started)

    def _client(self, scope: Scope) -> str:
        peer = str((scope.get("client") or ("", 0))[0])
        if not self.trusted:
            return client_address(peer, None, self.trusted)
        # Every X-Forwarded-For line, in order: a proxy that appends a line of its own must
        # not leave the sender's first line in front.
        lines = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        return client_address(peer, ",".join(lines) if lines else None, self.trusted)

    def _record(self, scope: Scope, outcome: Outcome, status: int, seconds: float) -> None:
        path = scope["path"]
        if self.audit is not None and path not in _QUIET_PATHS and path != "/openapi.json":
            facts = RequestFacts(scope["method"], path, status, round(seconds * 1000, 3), time.time())
            self.audit.record(outcome, facts)
        m = self.metrics
        source = m.source_label(outcome.source)
        code = outcome.code or ("ok" if status < 400 else f"http_{status}")
        m.count_request(source, m.event_label(outcome.source, outcome.event), status, code)
        if outcome.source is not None:
            m.observe_request(source, seconds)
        if code in AUTH_CODES:
            m.auth_failures.labels(source, code).inc()
        level = logging.DEBUG if path in _QUIET_PATHS and status < 500 else logging.INFO
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "receiver.request",
            extra={
                "request_id": outcome.request_id,
                "method": scope["method"],
                "path": path,
                "source": outcome.source,
                "event_type": outcome.event,
                "status": status,
                "code": code,
                "reason": outcome.reason,
                "event_id": outcome.event_id,
                "latency_ms": round(seconds * 1000, 3),
                "client": outcome.client_ip,
                "principal": outcome.principal,
                "key_id": outcome.key_id,
            },
        )


def connection_refusals(metrics: Metrics) -> Callable[[int, str, str], None]:
    """The log line and metrics of a refusal the connection made before any request reached the app.

    A 408 for headers too slow, a 431 for headers too large, a 503 while the loop is behind
    (``receiver.connections``): counted and logged as every other answer, without a path.
    """

    def record(status: int, code: str, client: str) -> None:
        metrics.count_request(metrics.source_label(None), metrics.event_label(None, None), status, code)
        log.info(
            "receiver.request",
            extra={"request_id": next(_generated_ids), "status": status, "code": code, "client": client},
        )

    return record
