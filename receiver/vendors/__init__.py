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

from receiver.vendors import generic, iotcomms, sigfox, soracom, tracker
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
    check: Callable[[Any], list[dict[str, str]]] = lambda _payload: []  # errors beyond the model's


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
    sigfox.KIND: Vendor(
        kind=sigfox.KIND,
        type_prefix=sigfox.TYPE_PREFIX,
        media_types=sigfox.MEDIA_TYPES,
        events=sigfox.EVENTS,
        data=sigfox.event_data,
        subject=sigfox.subject,
        time=sigfox.event_time,
        group=sigfox.group,
        decode=sigfox.decode,
        reading=sigfox.reading,
        answer=sigfox.answer,
    ),
    soracom.KIND: Vendor(
        kind=soracom.KIND,
        type_prefix=soracom.TYPE_PREFIX,
        media_types=soracom.MEDIA_TYPES,
        events=soracom.EVENTS,
        data=soracom.event_data,
        subject=soracom.subject,
        time=soracom.event_time,
        group=soracom.group,
        decode=soracom.decode,
        reading=soracom.reading,
    ),
}


def generic_vendor(schema: generic.SchemaValidator, options: generic.GenericOptions) -> Vendor:
    """A ``generic`` source's vendor: its own JSON Schema and pointers, bound once at startup."""
    return Vendor(
        kind=generic.KIND,
        type_prefix=generic.TYPE_PREFIX,
        media_types=generic.MEDIA_TYPES,
        events=generic.EVENTS,
        data=generic.event_data,
        subject=lambda payload, _domain: generic.subject(generic.event_data(payload), options),
        time=lambda payload: generic.event_time(generic.event_data(payload), options),
        group=lambda payload: generic.group(generic.event_data(payload), options),
        reading=lambda payload: generic.reading(generic.event_data(payload), options),
        check=lambda payload: [
            *schema.validate(generic.event_data(payload)),
            *generic.pointer_errors(generic.event_data(payload), options),
        ],
    )
