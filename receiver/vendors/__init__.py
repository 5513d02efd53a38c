"""The vendors the receiver understands, each a module with its models and normalizer.

A ``Vendor`` bundles what the pipeline needs of one kind of source: which callbacks
exist and the pydantic model of each, the media types it posts, and how a validated
payload names its subject, time and data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
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


def _from_module(module: ModuleType) -> Vendor:
    """A vendor module (see ``vendors.base``) as the pipeline's ``Vendor``; optional hooks default."""
    return Vendor(
        kind=module.KIND,
        type_prefix=module.TYPE_PREFIX,
        media_types=module.MEDIA_TYPES,
        events=module.EVENTS,
        data=module.event_data,
        subject=module.subject,
        time=module.event_time,
        group=getattr(module, "group", lambda _payload: None),
        decode=getattr(module, "decode", raw_json),
        reading=getattr(module, "reading", no_reading),
        answer=getattr(module, "answer", no_answer),
    )


VENDORS: dict[str, Vendor] = {module.KIND: _from_module(module) for module in (iotcomms, tracker, sigfox, soracom)}


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
