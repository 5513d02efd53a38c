"""The request path: authenticate, validate, normalize, route, publish.

No HTTP types here: a ``Delivery`` comes in, an ``Accepted`` or a ``RequestError``
comes out. Authenticated deliveries that fail validation are dead-lettered before
the refusal is answered, so nothing an authenticated sender posted is lost.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.deadletter import deadletter_record
from receiver.errors import RequestError, UnknownSourceError
from receiver.events import Accepted, Delivery
from receiver.normalize import normalize
from receiver.publish import Publisher
from receiver.routing import route, topic_for
from receiver.sources import Source
from receiver.validation import validate


class Pipeline:
    def __init__(self, sources: Mapping[str, Source], publisher: Publisher, topic_prefix: str) -> None:
        self._sources = sources
        self._publisher = publisher
        self._prefix = topic_prefix

    async def process(self, delivery: Delivery) -> Accepted:
        """Answer only after the publisher made the event durable."""
        source = self._sources.get(delivery.source_id)
        if source is None:
            msg = f"no source {delivery.source_id!r} is configured here; check the callback URL"
            raise UnknownSourceError(msg)
        source.auth.authenticate(delivery.authorization, delivery.received_at)
        try:
            payload = validate(source.vendor, delivery)
        except RequestError as exc:
            await self._publisher.publish([deadletter_record(delivery, exc, self._prefix)])
            raise
        event = normalize(delivery, source.vendor, payload, source.domain)
        topic = topic_for(self._prefix, source.vendor.kind, delivery.event, source.settings.topic)
        await self._publisher.publish(route(event, topic))
        return Accepted(event_id=event.id, topics=[topic])
