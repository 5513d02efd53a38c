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

from pydantic import BaseModel, ConfigDict, Field

from receiver.vendors.base import JsonVendor, VendorOptions


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


class IotcommsOptions(VendorOptions):
    """An iotcomms source names its customer domain: the subject of its events and of its JWTs."""

    domain: str = Field(
        min_length=1,
        description="the customer domain, e.g. customer47.prod-eu-north-1.iotcomms.io; the JWT `sub` must equal it",
    )


class Iotcomms(JsonVendor):
    kind = "iotcomms"
    type_prefix = "io.iotcomms."
    events = {
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
    Options = IotcommsOptions

    def __init__(self, options: IotcommsOptions) -> None:
        super().__init__(options)
        self.domain = options.domain

    @property
    def credential_subject(self) -> str | None:
        """Tokens must name the customer's domain (iotcomms signs ``sub`` = domain)."""
        return self.domain

    def subject(self, payload: IotcommsCallback) -> str:
        """The customer's domain: iotcomms callbacks name no device of their own.

        iotcomms documents no timestamp in its callbacks either: the receive time stands in.
        """
        del payload
        return self.domain
