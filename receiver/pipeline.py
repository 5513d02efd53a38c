"""The request path: admit, authenticate, authorize, validate, normalize, route, publish.

No HTTP types here: a ``Delivery`` comes in, an ``Accepted`` or a ``RequestError``
comes out, and the delivery's ``Outcome`` notes who sent it. Authenticated deliveries
that fail validation are dead-lettered before the refusal is answered, so nothing an
authenticated sender posted is lost. A dry run goes through every step but publishes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from pydantic import BaseModel

from receiver.admission import Admission
from receiver.auth import Credentials, Principal
from receiver.deadletter import deadletter_record, deadletter_topic
from receiver.dedup import Deduplicator
from receiver.errors import AuthError, ForbiddenError, InvalidPayloadError, RequestError, UnknownSourceError
from receiver.events import Accepted, CloudEvent, Delivery, Record
from receiver.normalize import normalize
from receiver.publish import Publisher
from receiver.routing import Facts, matching_rule, route, topic_for
from receiver.sequences import SequenceTracker
from receiver.settings import RouteRule
from receiver.sources import Source
from receiver.validation import validate_all
from receiver.vendors.base import Answer


@dataclass(frozen=True, slots=True)
class Plan:
    """What a delivery becomes: its events and the records that carry them."""

    events: Sequence[CloudEvent]
    records: Sequence[Record]
    answer: Answer | None


class Pipeline:
    def __init__(  # noqa: PLR0913 - the parts the path is made of, wired by create_app
        self,
        sources: Mapping[str, Source],
        publisher: Publisher,
        topic_prefix: str,
        admission: Admission,
        *,
        routes: Sequence[RouteRule] = (),
        on_sequence: Callable[[str, str], None] = lambda _source, _status: None,
    ) -> None:
        self._sources = sources
        self._publisher = publisher
        self._prefix = topic_prefix
        self._admission = admission
        self._routes = list(routes)
        self._on_sequence = on_sequence
        self._dedup = Deduplicator()
        self._sequences = SequenceTracker()

    @property
    def sources(self) -> Mapping[str, Source]:
        return self._sources

    def replace_sources(self, sources: Mapping[str, Source]) -> None:
        """Swap in reloaded sources; requests already past the lookup keep the old ones."""
        self._sources = sources
        self._admission.configure(sources)

    async def process(self, delivery: Delivery, *, publish: bool = True) -> Accepted:
        """Answer only after the publisher made the events durable (or, in a dry run, never publish)."""
        source = self._sources.get(delivery.source_id)
        if source is None:
            msg = f"no source {delivery.source_id!r} is configured here; check the callback URL"
            raise UnknownSourceError(msg)
        budget = self._admission.admit(source, delivery.client_ip, delivery.received_at)
        try:
            principal = self._authenticate(source, delivery)
            self._authorize_roles(source, principal)
            delivery = _with_proven_identity(delivery, principal)
            try:
                payloads = validate_all(source.vendor, delivery)
            except RequestError as exc:
                if not publish:
                    raise
                await self._publisher.publish([deadletter_record(delivery, exc, self._prefix)])
                principal.accept()
                if isinstance(exc, InvalidPayloadError) and source.settings.on_invalid == "accept":
                    topic = deadletter_topic(self._prefix)
                    return Accepted(event_id="", topics=[topic], status=202, code=exc.code)
                raise
            for payload in payloads:
                self._authorize_group(source, principal, payload)
            plan = self._plan(source, delivery, payloads, track=publish)
            fresh = self._fresh(source, plan, delivery.received_at)
            if publish and fresh:
                await self._publisher.publish(fresh)
                self._remember(source, plan, delivery.received_at)
            if publish:
                principal.accept()  # durable now: from here on the same credential is a replay
        except RequestError as exc:
            if budget is not None:
                exc.extra_headers.update(budget.headers())
            raise
        return Accepted(
            event_id=plan.events[0].id,
            topics=sorted({r.topic for r in plan.records}),
            headers=budget.headers() if budget else {},
            event_ids=[e.id for e in plan.events] if len(payloads) > 1 or _is_batch(delivery) else None,
            answer=plan.answer,
            events=plan.events,
            records=plan.records,
        )

    async def replay(self, delivery: Delivery) -> Accepted:
        """Re-submit a dead letter: it was authenticated when it arrived, so validation onwards.

        A letter that is still invalid raises its ``RequestError`` and is not dead-lettered
        again (it is already on the topic).
        """
        source = self._sources.get(delivery.source_id)
        if source is None:
            msg = f"no source {delivery.source_id!r} is configured any more"
            raise UnknownSourceError(msg)
        payloads = validate_all(source.vendor, delivery)
        plan = self._plan(source, delivery, payloads)
        fresh = self._fresh(source, plan, delivery.received_at)
        if fresh:
            await self._publisher.publish(fresh)
        return Accepted(event_id=plan.events[0].id, topics=sorted({r.topic for r in plan.records}))

    def _plan(self, source: Source, delivery: Delivery, payloads: Sequence[BaseModel], *, track: bool = True) -> Plan:
        """Events and records; ``track`` (not in a dry run) lets sequence tracking see the messages."""
        vendor = source.vendor
        batch = len(payloads) > 1 or _is_batch(delivery)
        events: list[CloudEvent] = []
        records: list[Record] = []
        for index, payload in enumerate(payloads):
            event = normalize(
                delivery,
                vendor,
                payload,
                source.domain,
                include_raw=source.settings.include_raw,
                index=index if batch else None,
                extensions=self._sequence_marks(source, vendor.reading(payload)) if track else None,
            )
            facts = Facts(source.id, vendor.kind, delivery.event, event.subject, vendor.group(payload))
            rule = matching_rule(self._routes, facts)
            topic = topic_for(self._prefix, vendor.kind, delivery.event, source.settings.topic)
            events.append(event)
            records.extend(route(event, topic, rule, facts))
        answer = None
        if len(payloads) == 1:
            static = source.settings.answers.get(delivery.event)
            options = source.settings.options
            answer = Answer(200, static) if static is not None else vendor.answer(delivery.event, payloads[0], options)
        return Plan(events, records, answer)

    def _sequence_marks(self, source: Source, reading: object) -> dict[str, str]:
        sequence = getattr(reading, "sequence", None)
        device = getattr(reading, "device_id", None)
        if sequence is None or device is None:
            return {}
        status, missed = self._sequences.observe(source.id, device, sequence)
        self._on_sequence(source.id, status)
        return {"seqstatus": status, "seqmissed": str(missed)} if missed else {"seqstatus": status}

    def _fresh(self, source: Source, plan: Plan, now: float) -> list[Record]:
        window = source.settings.dedup_window_seconds
        if window <= 0:
            return list(plan.records)
        seen = {e.id for e in plan.events if self._dedup.seen(e.id, now)}
        return [r for r in plan.records if dict(r.headers).get("ce_id", b"").decode() not in seen]

    def _remember(self, source: Source, plan: Plan, now: float) -> None:
        window = source.settings.dedup_window_seconds
        if window > 0:
            for event in plan.events:
                self._dedup.remember(event.id, now, window)

    def _authenticate(self, source: Source, delivery: Delivery) -> Principal:
        credentials = Credentials(delivery.headers, delivery.body, delivery.received_at)
        try:
            principal = source.auth.authenticate(credentials)
        except AuthError:
            self._admission.failed(source, delivery.client_ip, delivery.received_at)
            raise
        outcome = delivery.outcome
        outcome.auth_method, outcome.principal, outcome.key_id = principal.method, principal.name, principal.key_id
        return principal

    @staticmethod
    def _authorize_roles(source: Source, principal: Principal) -> None:
        missing = sorted(set(source.settings.require_roles) - principal.roles)
        if missing:
            msg = f"the credential lacks the role(s) {', '.join(missing)} this source requires"
            raise ForbiddenError(msg)

    @staticmethod
    def _authorize_group(source: Source, principal: Principal, payload: object) -> None:
        if not source.settings.restrict_to_token_groups:
            return
        group = source.vendor.group(payload)
        if group is None or principal.groups is None or group not in principal.groups:
            raise ForbiddenError("the message's device group is not one of the groups the credential carries")


_FUNK_IDENTITY = {"imsi": b"x-soracom-imsi", "simId": b"x-soracom-sim-id", "imei": b"x-soracom-imei"}


def _with_proven_identity(delivery: Delivery, principal: Principal) -> Delivery:
    """Soracom Funk proves the device in its token, not in headers: the token's word wins."""
    if principal.method != "soracom_funk":
        return delivery
    ctx = principal.claims.get("ctx")
    if not isinstance(ctx, Mapping):
        return delivery
    proven = {header: str(ctx[claim]).encode() for claim, header in _FUNK_IDENTITY.items() if ctx.get(claim)}
    # Identity headers the client sent itself are dropped: only the token's count.
    kept = {k: v for k, v in delivery.headers.items() if not k.startswith((b"x-soracom-", b"x-device-id"))}
    return replace(delivery, headers={**kept, **proven})


def _is_batch(delivery: Delivery) -> bool:
    return delivery.body.lstrip()[:1] == b"["
