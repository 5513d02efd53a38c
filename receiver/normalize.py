"""Normalization: a validated vendor payload becomes one CloudEvents 1.0 envelope.

The event id is derived from the delivery itself (source, callback name and the raw
body bytes, hashed with SHA-256 into an RFC 9562 UUIDv8), so a vendor's retry of the
same request yields the same id and consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from pydantic import BaseModel

from receiver.events import CloudEvent, Delivery
from receiver.vendors import Vendor


def rfc3339(seconds: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with millisecond precision."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_id(delivery: Delivery) -> str:
    """The same delivery (source, callback, body) always gives the same id."""
    digest = hashlib.sha256(f"{delivery.source_id}\n{delivery.event}\n".encode())
    digest.update(delivery.body)
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom (here SHA-256 based)
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def normalize(delivery: Delivery, vendor: Vendor, payload: BaseModel, domain: str | None) -> CloudEvent:
    """Build the envelope; extension attributes carry the receive time and the source id."""
    received = rfc3339(delivery.received_at)
    when = vendor.time(payload)
    return CloudEvent(
        id=event_id(delivery),
        source=f"urn:iot-receiver:{delivery.source_id}",
        type=vendor.type_prefix + delivery.event,
        subject=vendor.subject(payload, domain),
        time=received if when is None else rfc3339(when),
        data=vendor.data(payload),
        extensions={"receivedtime": received, "sourceid": delivery.source_id},
    )
