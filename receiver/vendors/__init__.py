"""The vendors the receiver understands, each a module with its models and normalizer.

A ``Vendor`` bundles what the pipeline needs of one kind of source: which callbacks
exist and the pydantic model of each, the media types it posts, and how a validated
payload names its subject, time and data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from receiver.vendors import iotcomms, tracker
from receiver.vendors.base import Answer, Inbound, Reading, no_answer, no_reading, raw_json


@dataclass(frozen=True, slots=True)
class Vendor:
    """One kind of source (``kind:`` in the config); see ``vendors.base`` for the contract."""

    kind: str
    type_prefix: str  # CloudEvents ``type`` = prefix + event name
    media_types: frozenset[str]
    events: Mapping[str, type[BaseModel]]
    data: Callable[[Any], Any]
    subject: Callable[[Any, str | None], str]
    time: Callable[[Any], float | None]
    group: Callable[[Any], str | None] = lambda _payload: None  # the device group, where the vendor has one
    decode: Callable[[str, Inbound], Any] = raw_json
    reading: Callable[[Any], Reading | None] = no_reading
    answer: Callable[[str, Any, Mapping[str, Any]], Answer | None] = no_answer


VENDORS: dict[str, Vendor] = {
    iotcomms.KIND: Vendor(
        kind=iotcomms.KIND,
        type_prefix=iotcomms.TYPE_PREFIX,
        media_types=iotcomms.MEDIA_TYPES,
        events=iotcomms.EVENTS,
        data=iotcomms.event_data,
        subject=iotcomms.subject,
        time=iotcomms.event_time,
    ),
    tracker.KIND: Vendor(
        kind=tracker.KIND,
        type_prefix=tracker.TYPE_PREFIX,
        media_types=tracker.MEDIA_TYPES,
        events=tracker.EVENTS,
        data=tracker.event_data,
        subject=tracker.subject,
        time=tracker.event_time,
        group=tracker.group,
        reading=tracker.reading,
    ),
}
