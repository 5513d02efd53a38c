"""The request log: request id, the canonical log line, the request metrics and the audit record.

An ASGI middleware around the whole app. Endpoints and error handlers fill in the
request's ``Outcome`` (source, event, code, event id); when the response is done, one
log line and the metrics are written from it.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Sequence

from pydantic import IPvAnyNetwork
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.admission import client_address
from receiver.audit import AuditTrail, RequestFacts
from receiver.errors import HeadersTooLargeError, OverloadedError, auth_codes
from receiver.events import Outcome
from receiver.metrics import Metrics
from receiver.responses import send_error

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
    def __init__(  # noqa: PLR0913 - wired once by create_app, by keyword
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        audit: AuditTrail | None = None,
        trusted_proxies: Sequence[IPvAnyNetwork] = (),
        max_header_bytes: int = 16384,
        max_headers: int = 100,
        max_in_flight: int = 256,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.audit = audit
        self.trusted = list(trusted_proxies)
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_in_flight = max_in_flight
        self.deliveries = 0  # deliveries being handled now (probes, metrics and docs are not counted)

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

        delivery = scope["path"].startswith("/v1/")
        self.metrics.in_flight += 1
        self.deliveries += delivery
        try:
            refusal = self._oversized(scope["headers"]) or (self._shed() if delivery else None)
            if refusal is None:
                await self.app(scope, receive, send_with_id)
            else:  # refused before anything reads the request
                await send_error(scope, send_with_id, refusal)
        finally:
            self.metrics.in_flight -= 1
            self.deliveries -= delivery
            self._record(scope, outcome, status, time.perf_counter() - started)

    def _oversized(self, headers: Sequence[tuple[bytes, bytes]]) -> HeadersTooLargeError | None:
        if len(headers) > self.max_headers:
            return HeadersTooLargeError(f"the request has more than {self.max_headers} headers; send fewer")
        size = sum(len(name) + len(value) for name, value in headers)
        if size > self.max_header_bytes:
            msg = f"the request's headers are larger than {self.max_header_bytes} bytes; send smaller ones"
            return HeadersTooLargeError(msg)
        return None

    def _shed(self) -> OverloadedError | None:
        """Past ``max_in_flight`` deliveries, the excess is answered at once, so the accepted ones stay fast."""
        if self.deliveries <= self.max_in_flight:
            return None
        self.metrics.shed.inc()
        return OverloadedError(f"this receiver is handling {self.max_in_flight} deliveries already; retry in a second")

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
