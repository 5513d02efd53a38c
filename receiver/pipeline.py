"""The request path: admit, authenticate, authorize, validate, normalize, route, publish.

No HTTP types here: a ``Delivery`` comes in, an ``Accepted`` or a ``RequestError``
comes out, and the delivery's ``Outcome`` notes who sent it. Authenticated deliveries
that fail validation are dead-lettered before the refusal is answered, so nothing an
authenticated sender posted is lost.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.admission import Admission
from receiver.auth import Credentials, Principal
from receiver.deadletter import deadletter_record
from receiver.errors import AuthError, ForbiddenError, RequestError, UnknownSourceError
from receiver.events import Accepted, Delivery
from receiver.normalize import normalize
from receiver.publish import Publisher
from receiver.routing import route, topic_for
from receiver.sources import Source
from receiver.validation import validate


class Pipeline:
    def __init__(
        self, sources: Mapping[str, Source], publisher: Publisher, topic_prefix: str, admission: Admission
    ) -> None:
        self._sources = sources
        self._publisher = publisher
        self._prefix = topic_prefix
        self._admission = admission

    @property
    def sources(self) -> Mapping[str, Source]:
        return self._sources

    def replace_sources(self, sources: Mapping[str, Source]) -> None:
        """Swap in reloaded sources; requests already past the lookup keep the old ones."""
        self._sources = sources
        self._admission.configure(sources)

    async def process(self, delivery: Delivery) -> Accepted:
        """Answer only after the publisher made the event durable."""
        source = self._sources.get(delivery.source_id)
        if source is None:
            msg = f"no source {delivery.source_id!r} is configured here; check the callback URL"
            raise UnknownSourceError(msg)
        budget = self._admission.admit(source, delivery.client_ip, delivery.received_at)
        try:
            principal = self._authenticate(source, delivery)
            self._authorize_roles(source, principal)
            try:
                payload = validate(source.vendor, delivery)
            except RequestError as exc:
                await self._publisher.publish([deadletter_record(delivery, exc, self._prefix)])
                principal.accept()
                raise
            self._authorize_group(source, principal, payload)
            event = normalize(delivery, source.vendor, payload, source.domain)
            topic = topic_for(self._prefix, source.vendor.kind, delivery.event, source.settings.topic)
            await self._publisher.publish(route(event, topic))
            principal.accept()  # durable now: from here on the same credential is a replay
        except RequestError as exc:
            if budget is not None:
                exc.extra_headers.update(budget.headers())
            raise
        return Accepted(event_id=event.id, topics=[topic], headers=budget.headers() if budget else {})

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
