"""iotcomms.io callbacks: their payload models and how they become events.

iotcomms posts each callback to ``CALLBACK_BASE_URL/<name>``. Its callback schemas are
not public beyond the overview, so the models are an assumption, written down here
and in the README:

* ``/message`` (an incoming SIP MESSAGE) carries the SIP ``from`` and ``to`` URIs, the
  ``contentType`` and ``body`` of the message, and an opaque ``replyId`` that must be
  handed back verbatim when replying. All five are required strings.
* every other callback is a JSON object; ``sessionId``, ``replyId`` and ``callId`` are
  typed as strings when present, and kept verbatim.
* every model keeps fields it does not know (``extra="allow"``), so they reach Kafka
  unchanged when iotcomms adds one.

The subject, and so the Kafka key, is the customer's domain: one tenant's callbacks
stay in order on one partition.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IotcommsCallback(BaseModel):
    """Any iotcomms callback: a JSON object whose identifiers, when present, are strings."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    session_id: str | None = Field(default=None, alias="sessionId")
    reply_id: str | None = Field(default=None, alias="replyId")
    call_id: str | None = Field(default=None, alias="callId")


class IotcommsMessage(IotcommsCallback):
    """``/message``: an incoming SIP MESSAGE (the one callback whose fields are documented)."""

    sip_from: str = Field(alias="from", min_length=1, description="SIP URI of the sender")
    sip_to: str = Field(alias="to", min_length=1, description="SIP URI of the recipient")
    content_type: str = Field(alias="contentType", description="MIME type of the message body")
    body: str = Field(description="the message text")
    reply_id: str = Field(alias="replyId", min_length=1, description="opaque; returned verbatim to reply")


KIND = "iotcomms"
TYPE_PREFIX = "io.iotcomms."
MEDIA_TYPES = frozenset({"application/json"})

EVENTS: dict[str, type[IotcommsCallback]] = {
    "message": IotcommsMessage,
    "newCall": IotcommsCallback,
    "getIvrCommand": IotcommsCallback,
    "callEvent": IotcommsCallback,
    "callAnswered": IotcommsCallback,
    "callNotify": IotcommsCallback,
    "sessionCompleted": IotcommsCallback,
    "recordingStarted": IotcommsCallback,
    "recordingStored": IotcommsCallback,
    "newAlarmbridgeEvent": IotcommsCallback,
    "alarmEvent": IotcommsCallback,
}


def event_data(payload: IotcommsCallback) -> dict[str, Any]:
    """The event's ``data``: the callback with its original field names, unknown ones kept."""
    return payload.model_dump(mode="json", by_alias=True, exclude_unset=True)


def subject(payload: IotcommsCallback, domain: str | None) -> str:
    """The customer's domain: iotcomms callbacks name no device of their own."""
    del payload
    return domain or ""


def event_time(payload: IotcommsCallback) -> float | None:
    """iotcomms documents no timestamp in its callbacks: the receive time stands in."""
    del payload
    return None
