"""Routing: which topic an event goes to, under which key and with which headers.

The default topic is ``<topic_prefix>.<kind>.<event>``; a source may name its own.
The key is the event's subject (device or domain), so one subject's events keep
their order on one partition.
"""

from __future__ import annotations

from receiver.events import CLOUDEVENTS_JSON, CloudEvent, Record


def topic_for(prefix: str, kind: str, event: str, override: str | None = None) -> str:
    return override or f"{prefix}.{kind}.{event}"


def route(event: CloudEvent, topic: str) -> list[Record]:
    """The Kafka records for one event: structured-mode CloudEvent with ``ce_*`` headers."""
    headers = [
        ("content-type", CLOUDEVENTS_JSON.encode()),
        ("ce_id", event.id.encode()),
        ("ce_type", event.type.encode()),
        ("ce_source", event.source.encode()),
    ]
    return [Record(topic=topic, key=event.subject.encode(), value=event.to_json(), headers=headers)]
