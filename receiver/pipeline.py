"""The request path: admit, authenticate and authorize, read, plan the records, publish, answer.

Admission (``admit``) runs on the headers, called by ``receiver.gate`` before the body
is read; ``process`` takes the admitted request once its body is complete.

No HTTP types here: a ``Delivery`` comes in, an ``Accepted`` or a ``RequestError`` comes
out, and the delivery's ``Outcome`` notes who sent it. Authenticated deliveries that
fail intake are dead-lettered before the refusal is answered, so nothing an
authenticated sender posted is lost. A dry run goes through every step but publishes
nothing. ``build_pipeline`` makes the one pipeline the app and dead-letter re-drive use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

from pydantic import BaseModel

from receiver import intake
from receiver.admission import Admission, Admitted
from receiver.auth import Credentials, Principal
from receiver.deadletter import deadletter_record, deadletter_topic
from receiver.errors import (
    AuthError,
    BatchTooLargeError,
    ContentError,
    InvalidPayloadError,
    KafkaUnavailableError,
    RecordTooLargeError,
    RequestError,
    UnknownSourceError,
)
from receiver.events import MAX_RECORD_BYTES, Accepted, CloudEvent, Delivery, Record
from receiver.limits import Budget
from receiver.metrics import Metrics
from receiver.normalize import EventIds, normalize
from receiver.publish import Publisher
from receiver.publish.instrumented import InstrumentedPublisher
from receiver.routing import Facts, destination, route
from receiver.sequences import SequenceTracker
from receiver.settings import ContentMode, RouteRule, Settings
from receiver.sources import Source
from receiver.state import Once, State
from receiver.tracing import Tracing
from receiver.vendors.base import Answer, Parsed


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Plan:
    """What a delivery becomes: its events, the records that carry them, the vendor's answer."""

    events: Sequence[CloudEvent]
    records: Sequence[Record]
    answer: Answer | None
    batch: bool

    def accepted(self, budget: Budget | None) -> Accepted:
        return Accepted(
            event_id=self.events[0].id,
            topics=sorted({r.topic for r in self.records}),
            headers=budget.headers() if budget else {},
            event_ids=[e.id for e in self.events] if self.batch else None,
            answer=self.answer,
            events=self.events,
            records=self.records,
        )


class RefusalContext:
    """Around the steps after admission: every refusal raised inside carries the source's rate-limit state."""

    def __init__(self, budget: Budget | None) -> None:
        self.budget = budget

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, RequestError) and self.budget is not None:
            exc.extra_headers.update(self.budget.headers())


class Pipeline:
    def __init__(  # noqa: PLR0913 - the parts the path is made of, wired by build_pipeline
        self,
        sources: Mapping[str, Source],
        publisher: Publisher,
        topic_prefix: str,
        admission: Admission,
        state: State,
        *,
        routes: Sequence[RouteRule] = (),
        content_mode: ContentMode = "structured",
        on_sequence: Callable[[str, str], None] = lambda _source, _status: None,
        max_records: int | None = None,
    ) -> None:
        self._sources = sources
        self._max_records = max_records  # kafka.max_pending_records: a plan with more can never be published
        self._publisher = publisher
        self._prefix = topic_prefix
        self._admission = admission
        self._routes = list(routes)
        self._content_mode = content_mode
        self._on_sequence = on_sequence
        self._state = state
        self._sequences = SequenceTracker()

    @property
    def sources(self) -> Mapping[str, Source]:
        return self._sources

    @property
    def publisher(self) -> Publisher:
        """Where the pipeline's records go (the audit trail and readiness share it)."""
        return self._publisher

    def replace_sources(self, sources: Mapping[str, Source]) -> None:
        """Swap in reloaded sources; requests already past the lookup keep the old ones."""
        self._sources = sources

    def admit(self, source_id: str, client_ip: str, now: float) -> Admitted:
        """On the headers alone: the source named in the URL, and may this address try it? Nothing is spent."""
        return self._admission.admit(self._source(source_id), client_ip, now)

    async def failed(self, admitted: Admitted, client_ip: str, now: float) -> None:
        """Count a failed proof made before the body (a wrong admin token) against the address."""
        await self._admission.failed(admitted.source, client_ip, now)

    async def process(self, delivery: Delivery, *, admitted: Admitted | None = None, publish: bool = True) -> Accepted:
        """Answer only after the publisher made the events durable (or, in a dry run, never publish)."""
        if admitted is None:  # not through the gate (tests, tools): admitted now
            admitted = self.admit(delivery.source_id, delivery.client_ip, delivery.received_at)
        source = admitted.source
        with RefusalContext(admitted.budget) as context:
            principal, once = await self._authenticate(admitted, delivery)
            handled = self._handle(source, delivery, principal, context, publish=publish)
            if once is None:
                return await handled
            return await exactly_once(once, handled, keep=publish)  # copies get the first's answer

    async def _handle(
        self, source: Source, delivery: Delivery, principal: Principal, context: RefusalContext, *, publish: bool
    ) -> Accepted:
        """Charge, authorize, read, plan and publish one authenticated delivery; refused content is dead-lettered."""
        context.budget = await self._admission.charge(source, delivery.received_at)  # only a proven sender spends it
        source.auth.authorize(principal)
        try:
            parsed = intake.read(source.vendor, delivery, source.auth.credential_headers, principal)
            plan = self._plan(source, delivery, principal, parsed, track=publish)
        except ContentError as refused:
            return await self._dead_letter(source, delivery, principal, refused, publish=publish)
        if publish:
            await self._publish_fresh(source, plan, delivery.received_at)
        return plan.accepted(context.budget)

    async def redrive(self, delivery: Delivery, principal: Principal | None) -> Accepted:
        """Re-submit a dead letter: it was authenticated when it arrived, so intake onwards.

        The proven sender kept in the letter must still pass the source's authorization. A
        letter that is still refused raises its ``RequestError`` and is not dead-lettered
        again (it is already on the topic).
        """
        source = self._source(delivery.source_id)
        sender = principal or Principal(method="", name="")
        source.auth.authorize(sender)
        parsed = intake.read(source.vendor, delivery, source.auth.credential_headers, principal)
        plan = self._plan(source, delivery, sender, parsed)
        await self._publish_fresh(source, plan, delivery.received_at)
        return plan.accepted(None)

    def _source(self, source_id: str) -> Source:
        source = self._sources.get(source_id)
        if source is None:
            msg = f"no source {source_id!r} is configured here; check the callback URL"
            raise UnknownSourceError(msg)
        return source

    async def _authenticate(self, admitted: Admitted, delivery: Delivery) -> tuple[Principal, Once | None]:
        """The proven sender, and its hold on the request's single-use id; a failure counts against the address.

        A blocked address still gets its cheap checks, answered on their merits (a
        co-tenant's failures must not lock a valid sender out); only the expensive ones are
        refused, with 429.
        """
        source = admitted.source
        credentials = Credentials(delivery.headers, delivery.body, delivery.received_at)
        if admitted.blocked is not None and source.auth.is_costly(credentials):
            raise admitted.blocked
        try:
            principal = await source.auth.authenticate(credentials)
            once = await self._reserve(source, delivery, principal)  # a replayed id is a failure too
        except AuthError:
            await self._admission.failed(source, delivery.client_ip, delivery.received_at)
            raise
        outcome = delivery.outcome
        outcome.auth_method, outcome.principal, outcome.key_id = principal.method, principal.name, principal.key_id
        return principal, once

    async def _reserve(self, source: Source, delivery: Delivery, principal: Principal) -> Once | None:
        """Hold the credential's single-use id, if it has one, before anything else is done for it."""
        single = principal.single_use
        if single is None:
            return None
        digest = hashlib.sha256(single.id.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        key = f"{source.id}:{principal.method}:{digest}"
        fail_open = source.settings.single_use_on_state_outage == "local"
        return await self._state.reserve(key, single, delivery.received_at, delivery.body, fail_open=fail_open)

    async def _dead_letter(
        self, source: Source, delivery: Delivery, principal: Principal, refused: ContentError, *, publish: bool
    ) -> Accepted:
        """Keep what an authenticated sender posted, then refuse it (or, with ``on_invalid: accept``, 202)."""
        if not publish:
            raise refused
        letter = deadletter_record(delivery, refused, self._prefix, source.auth.credential_headers, principal)
        await self._publisher.publish([letter])
        if isinstance(refused, InvalidPayloadError) and source.settings.on_invalid == "accept":
            return Accepted(event_id="", topics=[deadletter_topic(self._prefix)], status=202, code=refused.code)
        raise refused

    def _plan(
        self, source: Source, delivery: Delivery, principal: Principal, parsed: Parsed, *, track: bool = True
    ) -> Plan:
        """Events and records; ``track`` (not in a dry run) lets sequence tracking see the messages."""
        vendor = source.vendor
        source.auth.authorize_groups(principal, (vendor.group(m) for m in parsed.messages))
        if vendor.subject_is_proven_device:
            source.auth.authorize_devices(principal, (vendor.subject(m) for m in parsed.messages))
        events: list[CloudEvent] = []
        records: list[Record] = []
        ids = EventIds(delivery, parsed.identity)  # the body hashed once, not once per item
        for index, message in enumerate(parsed.messages):
            try:
                event = normalize(
                    delivery,
                    vendor,
                    message,
                    include_raw=source.settings.include_raw,
                    index=index if parsed.batch else None,
                    ids=ids,
                    extensions=self._sequence_marks(source, vendor.reading(message)) if track else None,
                )
            except (ValueError, OverflowError, OSError) as exc:  # a value the models let through but time cannot hold
                msg = f"the message cannot be made into an event ({type(exc).__name__}); check its times and numbers"
                raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "unnormalizable", "msg": msg}]) from exc
            facts = Facts(source.id, vendor.kind, delivery.event, event.subject, vendor.group(message))
            where = destination(facts, self._routes, self._prefix, source.settings.topic)
            events.append(event)
            records.extend(route(event, where, self._content_mode))
        if self._max_records is not None and len(records) > self._max_records:
            msg = (
                f"the batch makes {len(records)} records, more than the {self._max_records} this receiver "
                "holds for Kafka at once; send smaller batches"
            )
            raise BatchTooLargeError(msg)
        if (largest := max((r.size() for r in records), default=0)) > MAX_RECORD_BYTES:
            msg = (
                f"an event of this delivery makes a {largest}-byte Kafka record, over the producer's "
                f"{MAX_RECORD_BYTES}; send smaller messages"
            )
            raise RecordTooLargeError(msg)
        return Plan(events, records, self._answer(source, delivery.event, parsed.messages), parsed.batch)

    @staticmethod
    def _answer(source: Source, event: str, messages: Sequence[BaseModel]) -> Answer | None:
        """A static answer configured for the callback, else the vendor's own (single messages only)."""
        if len(messages) != 1:
            return None
        static = source.settings.answers.get(event)
        return Answer(200, static) if static is not None else source.vendor.answer(event, messages[0])

    def _sequence_marks(self, source: Source, reading: object) -> dict[str, str]:
        sequence = getattr(reading, "sequence", None)
        device = getattr(reading, "device_id", None)
        if sequence is None or device is None:
            return {}
        status, missed = self._sequences.observe(source.id, device, sequence)
        self._on_sequence(source.id, status)
        return {"seqstatus": status, "seqmissed": str(missed)} if missed else {"seqstatus": status}

    async def _publish_fresh(self, source: Source, plan: Plan, now: float) -> None:
        """Publish the records of events not seen within the source's dedup window, then remember them."""
        window = source.settings.dedup_window_seconds
        records = list(plan.records)
        if window > 0:
            seen = await self._state.seen([e.id for e in plan.events], now)
            records = [r for r in records if r.event_id not in seen]
        if not records:
            return
        await self._publisher.publish(records)
        if window > 0:
            self._state.remember([e.id for e in plan.events], now, window)


async def exactly_once(once: Once, delivered: Coroutine[Any, Any, Accepted], *, keep: bool = True) -> Accepted:
    """Run the first copy of a signed request; a copy gets the first one's answer and runs nothing.

    The first copy's answer is kept when it was durable (2xx, or a refusal whose delivery
    was dead-lettered); otherwise (503, a refusal nothing was written for, a bug), or
    without ``keep`` (a dry run), the hold is released so a retry is processed afresh.
    """
    if not once.first:
        delivered.close()
        earlier = await once.earlier_answer()
        if isinstance(earlier, RequestError):
            raise earlier
        return cast("Accepted", earlier)
    try:
        accepted = await delivered
    except ContentError as refused:  # dead-lettered: durable
        (once.settle if keep else once.release)(refused)
        raise
    except RequestError as refused:
        once.release(refused)
        raise
    except BaseException:
        once.release(KafkaUnavailableError("an identical request failed; retry"))
        raise
    (once.settle if keep else once.release)(accepted)
    return accepted


def build_pipeline(  # noqa: PLR0913 - the parts, plus where its state lives
    settings: Settings,
    sources: Mapping[str, Source],
    publisher: Publisher,
    metrics: Metrics,
    tracing: Tracing | None = None,
    *,
    state: State,
) -> Pipeline:
    """The one pipeline: the app serves with it, dead-letter re-drive re-submits through it."""
    prefix = settings.kafka.topic_prefix
    instrumented = InstrumentedPublisher(
        publisher,
        metrics,
        tracing or Tracing(settings.tracing),
        deadletter_topic(prefix),
    )
    admission = Admission(state, settings.server.failure_limit_per_minute)
    return Pipeline(
        sources,
        instrumented,
        prefix,
        admission,
        state,
        routes=settings.routes,
        content_mode=settings.kafka.content_mode,
        on_sequence=metrics.count_sequence,
        max_records=settings.kafka.max_pending_records,
    )
