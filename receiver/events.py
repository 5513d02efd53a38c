"""The records that flow through the pipeline: a delivery in, a CloudEvent, Kafka records out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json as json_bytes

SPECVERSION = "1.0"
CLOUDEVENTS_JSON = "application/cloudevents+json"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One HTTP request as the pipeline sees it: no HTTP types, just the facts it needs."""

    source_id: str
    event: str
    body: bytes
    content_type: str
    authorization: str | None
    received_at: float  # Unix seconds, taken once when the request arrived


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvents 1.0 event; ``to_json`` gives the structured-mode record value."""

    id: str
    source: str
    type: str
    subject: str
    time: str
    data: Any
    datacontenttype: str = "application/json"
    extensions: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            **self.extensions,
            "data": self.data,
        }

    def to_json(self) -> bytes:
        return json_bytes(self.to_dict())


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, ready to publish."""

    topic: str
    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Accepted:
    """The pipeline's answer for a delivery the broker acknowledged."""

    event_id: str
    topics: Sequence[str]
