"""Normalization: a validated vendor payload becomes one CloudEvents 1.0 envelope.

The event id is derived from the delivery itself (source, callback name and the raw
body bytes, as a UUIDv5), so a vendor's retry of the same request yields the same id
and consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

from receiver.events import CloudEvent, Delivery
from receiver.vendors import Vendor

_ID_NAMESPACE = uuid.UUID("6f1c2b0e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")


def rfc3339(seconds: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with millisecond precision."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_id(delivery: Delivery) -> str:
    """The same delivery (source, callback, body) always gives the same id."""
    digest = hashlib.sha256(delivery.body).hexdigest()
    return str(uuid.uuid5(_ID_NAMESPACE, f"{delivery.source_id}\n{delivery.event}\n{digest}"))


def normalize(delivery: Delivery, vendor: Vendor, payload: BaseModel, domain: str | None) -> CloudEvent:
    """Build the envelope; extension attributes carry the receive time and the source id."""
    when = vendor.time(payload) or delivery.received_at
    return CloudEvent(
        id=event_id(delivery),
        source=f"urn:iot-receiver:{delivery.source_id}",
        type=vendor.type_prefix + delivery.event,
        subject=vendor.subject(payload, domain),
        time=rfc3339(when),
        data=vendor.data(payload),
        extensions={"receivedtime": rfc3339(delivery.received_at), "sourceid": delivery.source_id},
    )
