"""The edge: what a request must pass, in which order, before it may cost more than the check.

Each step is cheaper than the one after it, and refuses at once:

1. connection limits: header bytes and deadlines, idle connections (``receiver.connections``)
2. headers: too many or too large header lines get 431 (``HeaderLimits``, every path)
3. waiting time: a delivery that waited past ``server.max_wait_ms`` before the app saw
   it, or that arrives while the producer's backlog is full, gets 503 ``overloaded``
4. admission, on the headers alone: the URL names a configured source (404
   ``unknown_source``), the address is allowed (403 ``ip_not_allowed``), its failure
   block noted; a dry run's admin token (a wrong one counts against the address)
5. body: read within a reading slot (``server.max_reading``, of which one address holds
   at most ``server.max_reading_per_address``; past either, 503 ``overloaded``), within
   the body deadline (408) and the size limit (413). The time rules of every credential
   are judged at the instant the body is complete: holding it back extends no window
6. in flight: a complete delivery takes one of ``server.max_in_flight`` slots (503 past it)
7. authentication and the rest: ``Pipeline.process``. A blocked address still gets the
   cheap checks, answered on their merits (signatures, HMAC, token digests, remembered
   tokens); only the expensive ones (Argon2, a public-key signature not remembered) are
   refused, with 429

Probes, metrics and docs pass steps 3 to 6 untouched (``receiver.probes``). Like
``starlette.middleware.trustedhost``, each piece is plain ASGI with one concern.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.admission import Admitted, limit_key
from receiver.connections import ARRIVED  # loop.time() when the request's headers were complete
from receiver.endpoints import DELIVERIES, PUSH_EVENT, Deliver, DeliveryTable, check_admin, read_body
from receiver.errors import (
    AuthRequiredError,
    HeadersTooLargeError,
    MethodNotAllowedError,
    OverloadedError,
    RequestError,
)
from receiver.events import Delivery, Outcome
from receiver.intake import query_fields
from receiver.metrics import Metrics
from receiver.pipeline import Pipeline
from receiver.responses import send_error
from receiver.settings import Settings

_BODY_READ = "receiver.body_read"  # scope key: the whole body is in hand


class HeaderLimits:
    """Step 2: more header lines than ``max_headers``, or more bytes than ``max_header_bytes``, get 431."""

    def __init__(self, app: ASGIApp, *, max_header_bytes: int = 16384, max_headers: int = 100) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._oversized(scope["headers"]) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:  # refused before anything reads the request
            await send_error(scope, send, refusal)

    def _oversized(self, headers: Sequence[tuple[bytes, bytes]]) -> HeadersTooLargeError | None:
        if len(headers) > self.max_headers:
            return HeadersTooLargeError(f"the request has more than {self.max_headers} headers; send fewer")
        size = sum(len(name) + len(value) for name, value in headers)
        if size > self.max_header_bytes:
            msg = f"the request's headers are larger than {self.max_header_bytes} bytes; send smaller ones"
            return HeadersTooLargeError(msg)
        return None


class Slots:
    """A count of requests holding something, with a cap; past it, 503 ``overloaded`` at once."""

    def __init__(self, limit: int, metrics: Metrics, what: str) -> None:
        self.limit = limit
        self.held = 0
        self._metrics = metrics
        self._what = what

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.held >= self.limit:
            raise _shed(self._metrics, f"this receiver is {self._what} {self.limit} deliveries already")
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


class ReadingSlots:
    """Requests still sending their bodies: a cap for all, and a share of it per client address."""

    def __init__(self, limit: int, per_address: int, metrics: Metrics) -> None:
        self.all = Slots(limit, metrics, "reading the bodies of")
        self.per_address = per_address
        self.by_address: dict[str, int] = {}
        self._metrics = metrics

    @contextmanager
    def slot(self, client_ip: str) -> Iterator[None]:
        key = limit_key(client_ip)
        held = self.by_address.get(key, 0)
        if held >= self.per_address:
            msg = f"this address is sending {self.per_address} bodies already; finish those first"
            raise _shed(self._metrics, msg)
        with self.all.slot():
            self.by_address[key] = held + 1
            try:
                yield
            finally:
                left = self.by_address[key] - 1
                if left:
                    self.by_address[key] = left
                else:
                    del self.by_address[key]


class DeliveryGate:
    """Steps 3 to 6 for every delivery path, then its endpoint; every other path goes on to the router.

    Refusals are answered here, in the same JSON shape as the app's handlers: no
    exception middleware on the hot path.
    """

    def __init__(
        self, app: ASGIApp, *, settings: Settings, metrics: Metrics, table: DeliveryTable = DELIVERIES
    ) -> None:
        server = settings.server
        self.app = app
        self.table = table
        self.metrics = metrics
        self.max_wait = server.max_wait_ms / 1000 if server.max_wait_ms else float("inf")
        self.max_pending = settings.kafka.max_pending_records
        self.max_body_bytes = server.max_body_bytes
        self.body_timeout = server.body_timeout_seconds
        self.dry_run_token = (
            bytes.fromhex(settings.dry_run.token_sha256)
            if settings.dry_run.enabled and settings.dry_run.token_sha256
            else None
        )
        self.reading = ReadingSlots(server.max_reading, server.max_reading_per_address, metrics)
        self.in_flight = Slots(server.max_in_flight, metrics, "handling")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.table.match(scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, params = found
        scope["path_params"] = params
        try:
            await self._deliver(endpoint, scope, receive, send)
        except RequestError as exc:
            if not scope.get(_BODY_READ):
                # Refused before its body was read: close the connection after the answer, or a
                # sender could keep it open by trickling the rest of a body nobody reads.
                exc.extra_headers["Connection"] = "close"
            await send_error(scope, send, exc)

    async def _deliver(self, endpoint: Deliver, scope: Scope, receive: Receive, send: Send) -> None:
        """The steps in order; each one refuses by raising."""
        method = scope["method"]
        if method not in endpoint.methods:
            msg = f"{method} is not allowed on {scope['path']}; use {endpoint.allow}"
            raise MethodNotAllowedError(msg, sorted(endpoint.methods))
        if method == "OPTIONS":  # no body and no delivery: the Allow header and the webhook handshake
            await endpoint.options(scope, send)
            return
        state = scope["state"]
        self._shed_when_behind(scope, state["loop"].time())
        outcome: Outcome = state["outcome"]
        params = scope["path_params"]
        outcome.source, outcome.event = params["source"], params.get("event", PUSH_EVENT)
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins
        pipeline: Pipeline = state["pipeline"]
        admitted = pipeline.admit(outcome.source, outcome.client_ip, time.time())
        endpoint.check_method(scope, admitted.source)
        if endpoint.dry_run:
            await self._check_admin(pipeline, admitted, outcome.client_ip, headers.get(b"x-dry-run-token"))
        with self.reading.slot(outcome.client_ip):
            body = await read_body(
                receive, headers.get(b"content-length"), self.max_body_bytes, self.body_timeout, state["loop"]
            )
        scope[_BODY_READ] = True
        delivery = Delivery(
            source_id=outcome.source,
            event=outcome.event,
            body=body,
            content_type=headers.get(b"content-type", b"").decode("latin-1"),
            headers=headers,
            client_ip=outcome.client_ip,
            received_at=time.time(),  # the whole request is in hand: every time rule is judged now
            outcome=outcome,
            query=query_fields(scope["query_string"]) if scope["query_string"] else {},
        )
        with self.in_flight.slot():
            await endpoint(scope, send, delivery, admitted)

    def _shed_when_behind(self, scope: Scope, now: float) -> None:
        """Answered at once rather than late: the loop is the queue, or the producer's backlog is full."""
        waited = now - scope.get(ARRIVED, now)
        if waited > self.max_wait:
            raise _shed(self.metrics, f"this receiver is behind (the request waited {waited * 1000:.0f} ms)")
        if self.metrics.pending >= self.max_pending:
            raise _shed(self.metrics, f"{self.metrics.pending} records are waiting for Kafka already")

    async def _check_admin(self, pipeline: Pipeline, admitted: Admitted, client_ip: str, given: bytes | None) -> None:
        """A wrong admin token is a guess: it counts against the address, and a blocked one may guess no more."""
        if admitted.blocked is not None:
            raise admitted.blocked
        try:
            check_admin(self.dry_run_token, given)
        except AuthRequiredError:
            if given is not None:  # a guess; a missing token is not one
                await pipeline.failed(admitted, client_ip, time.time())
            raise


def _shed(metrics: Metrics, why: str) -> OverloadedError:
    metrics.shed.inc()
    return OverloadedError(f"{why}; retry in a second")
