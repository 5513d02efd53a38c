"""Normalization: a validated vendor payload becomes one CloudEvents 1.0 envelope.

Device vendors' facts are put into one vocabulary (``vendors.base.Reading``: the same
names and units whoever sent them), with the vendor's own body beside them under
``raw`` unless the source turns that off. Callbacks that are not device readings
(iotcomms) keep the vendor body as their data.

The event id is derived from the delivery itself (source, callback name, the identity
the vendor declares for it, the raw body bytes and, in a batch, the item's index, hashed
with SHA-256 into an RFC 9562 UUIDv8), so a vendor's retry of the same request yields
the same id and consumers can drop the duplicate, while two devices' deliveries never
share one.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from receiver.events import CloudEvent, Delivery
from receiver.vendors.base import Reading, Vendor

_last_second: list[tuple[int, str]] = [(-1, "")]  # the date-time part of the latest whole second


def rfc3339(seconds: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with millisecond precision."""
    fraction, integral = math.modf(seconds)  # rounded exactly as datetime.fromtimestamp does
    micros = round(fraction * 1e6)
    whole = int(integral) + (micros >= 1_000_000)
    micros %= 1_000_000
    cached_second, prefix = _last_second[0]
    if whole != cached_second:  # formatted once per second, not once per request
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second[0] = (whole, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


class EventIds:
    """The ids of one delivery's events: the body is hashed once, each item's id from a copy of that digest.

    A batch of n items costs one pass over the body, not n (the digest of everything
    before the index is copied per item); the ids are those ``event_id`` always gave.
    """

    __slots__ = ("_prefix",)

    def __init__(self, delivery: Delivery, identity: str = "") -> None:
        digest = hashlib.sha256(f"{delivery.source_id}\n{delivery.event}\n".encode())
        if identity:
            digest.update(f"@{identity}\n".encode())
        digest.update(delivery.body)
        self._prefix = digest

    def __call__(self, index: int | None = None) -> str:
        """The id of the item at ``index`` of a batch, or (``None``) of the delivery's one message."""
        digest = self._prefix
        if index is not None:
            digest = digest.copy()
            digest.update(f"\n#{index}".encode())
        raw = bytearray(digest.digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom (here SHA-256 based)
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id(delivery: Delivery, index: int | None = None, identity: str = "") -> str:
    """The same delivery (source, callback, the vendor's identity, body, batch index) always gives the same id."""
    return EventIds(delivery, identity)(index)


def event_data(vendor: Vendor, payload: BaseModel, reading: Reading | None, include_raw: bool) -> Any:
    """The reading in the one vocabulary (with the vendor body as ``raw``), or the vendor body."""
    raw = vendor.data(payload)
    if reading is None:
        return raw
    data: dict[str, Any] = reading.model_dump(mode="json", exclude_none=True)
    if include_raw:
        data["raw"] = raw
    return data


def normalize(  # noqa: PLR0913 - the facts of one event, all needed
    delivery: Delivery,
    vendor: Vendor,
    payload: BaseModel,
    *,
    include_raw: bool = True,
    index: int | None = None,
    identity: str = "",
    extensions: dict[str, str] | None = None,
    ids: EventIds | None = None,
) -> CloudEvent:
    """Build the envelope; extension attributes carry the receive time and the source id.

    ``ids``: the delivery's ``EventIds``, made once for every item of a batch.
    """
    received = rfc3339(delivery.received_at)
    when = vendor.time(payload)
    reading = vendor.reading(payload)
    return CloudEvent(
        id=(ids or EventIds(delivery, identity))(index),
        source=f"urn:iot-receiver:{delivery.source_id}",
        type=vendor.type_prefix + delivery.event,
        subject=vendor.subject(payload),
        time=received if when is None else rfc3339(when),
        data=event_data(vendor, payload, reading, include_raw),
        extensions={"receivedtime": received, "sourceid": delivery.source_id, **(extensions or {})},
    )
