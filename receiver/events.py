"""The records that flow through the pipeline: a delivery in, a CloudEvent, Kafka records out.

The records made per request are slots dataclasses but not frozen: a frozen ``__init__``
costs an ``object.__setattr__`` per field, on every request. Nothing mutates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json as json_bytes

SPECVERSION = "1.0"
CLOUDEVENTS_JSON = "application/cloudevents+json"


@dataclass(slots=True)
class Outcome:
    """What handling learned about a request (who, what, why refused); read once it is answered.

    The canonical log line, the metrics and the audit record are written from it.
    Never holds a secret: ``principal`` and ``key_id`` are names.
    """

    request_id: str
    client_ip: str = ""
    source: str | None = None
    event: str | None = None
    code: str | None = None
    reason: str | None = None
    event_id: str | None = None
    auth_method: str | None = None
    principal: str | None = None
    key_id: str | None = None


@dataclass(slots=True)
class Delivery:
    """One HTTP request as the pipeline sees it: no HTTP types, just the facts it needs."""

    source_id: str
    event: str
    body: bytes
    content_type: str
    headers: Mapping[bytes, bytes]  # lower-case names; the first of repeated headers
    client_ip: str
    received_at: float  # Unix seconds, taken once when the request arrived
    outcome: Outcome = field(default_factory=lambda: Outcome(request_id=""))
    query: Mapping[str, str] = field(default_factory=dict)  # the query string, for vendors that use it


@dataclass(slots=True)
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

    def binary_headers(self) -> list[tuple[str, bytes]]:
        """Kafka binary content mode: every attribute as a ``ce_`` header, the data's type as ``content-type``."""
        attributes = self.to_dict()
        del attributes["data"], attributes["datacontenttype"]
        return [("content-type", self.datacontenttype.encode())] + [
            (f"ce_{name}", str(value).encode()) for name, value in attributes.items()
        ]


# aiokafka's max_request_size (1 MiB, the producer is built with its default), less a record
# batch's overhead: a larger record is refused by the producer itself (MessageSizeTooLargeError).
MAX_RECORD_BYTES = 1_048_576 - 1_024


@dataclass(slots=True)
class Record:
    """One Kafka record, ready to publish."""

    topic: str
    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()
    event_id: str = ""  # the CloudEvent it carries, if any (not sent: for dedup and reports)

    def size(self) -> int:
        """Bytes the producer counts against its request size: key, value and headers."""
        return len(self.key) + len(self.value) + sum(len(name) + len(value) for name, value in self.headers)


@dataclass(slots=True)
class Accepted:
    """The pipeline's answer for a delivery the broker acknowledged."""

    event_id: str
    topics: Sequence[str]
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. the source's rate-limit state
    status: int = 200
    code: str = "ok"
    event_ids: Sequence[str] | None = None  # a batch: every item's id, in order
    answer: Any = None  # a synchronous answer the vendor expects (vendors.base.Answer)
    events: Sequence[CloudEvent] = ()
    records: Sequence[Record] = ()
