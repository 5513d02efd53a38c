"""Soracom's forwarding services: Beam (HTTP, UDP/TCP → HTTP), Funk and Funnel, as events.

Beam forwards a device's request and adds identity headers (``x-soracom-imsi``,
``-imei``, ``-sim-id``, ``-msisdn``; ``x-device-id`` or ``x-soracom-device-id`` for
Inventory devices; ``x-soracom-timestamp`` in Unix milliseconds), which the source's
auth verifies. ``decode`` merges them into the payload under ``soracom`` (camelCase
keys: ``imsi``, ``imei``, ``simId``, ``msisdn``, ``deviceId``, ``sigfoxDeviceId``,
``loraDeviceId``, ``operatorId``, ``timestamp``), so the event keeps who sent it. Where
the credential itself proves the device (Funk's token), only what it proves counts and
identity headers the client sent are ignored:

* ``beam`` and ``funk``: ``{"soracom": {...}, "body": <the device's JSON>}``;
* ``udp`` and ``tcp``: Beam's ``{"payload": "<base64>"}`` plus ``soracom`` and
  ``payloadHex``, the same bytes in hex (developers.soracom.io/en/docs/beam/udp-http);
* ``funnel``: Funnel's envelope as sent (users.soracom.io/ja-jp/docs/funnel/format):
  ``operatorId``, ``credentialsId``, ``destination``, ``sourceProtocol``, ``payloads``
  (the device data), ``timestamp`` (Unix milliseconds), ``imsi``, ``imei``.

The subject is the IMSI, else the SIM id, the Inventory/Sigfox/LoRaWAN device id, the
IMEI or the MSISDN; a payload naming none of them is refused. The time is Beam's
``x-soracom-timestamp`` or Funnel's ``timestamp``. No Soracom format defines device
facts, so the reading assumes a JSON object body whose ``temperature`` or ``temp`` is
°C, ``battery`` is % (0-100), and ``lat``/``latitude`` with ``lon``/``lng``/``longitude``
(and ``accuracy`` in metres) are a position, at the top or under ``position``,
``location`` or ``coords``; anything else is ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from receiver.vendors.base import Decoded, Inbound, JsonVendor, Position, Reading, read_json

_IDENTITY_VALUE = r"^[A-Za-z0-9_.:-]{1,128}$"
# Header -> key under "soracom"; where two headers give one key, the first present wins.
_IDENTITY_HEADERS = (
    ("x-soracom-imsi", "imsi"),
    ("x-soracom-imei", "imei"),
    ("x-soracom-sim-id", "simId"),
    ("x-soracom-msisdn", "msisdn"),
    ("x-device-id", "deviceId"),
    ("x-soracom-device-id", "deviceId"),
    ("x-soracom-sigfox-device-id", "sigfoxDeviceId"),
    ("x-soracom-lora-device-id", "loraDeviceId"),
    ("x-soracom-operator-id", "operatorId"),
    ("x-soracom-timestamp", "timestamp"),
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class Identity(_Model):
    """Who Soracom says sent the request, from the headers it added."""

    imsi: str | None = Field(default=None, pattern=_IDENTITY_VALUE)
    sim_id: str | None = Field(default=None, alias="simId", pattern=_IDENTITY_VALUE)
    device_id: str | None = Field(default=None, alias="deviceId", pattern=_IDENTITY_VALUE)
    sigfox_device_id: str | None = Field(default=None, alias="sigfoxDeviceId", pattern=_IDENTITY_VALUE)
    lora_device_id: str | None = Field(default=None, alias="loraDeviceId", pattern=_IDENTITY_VALUE)
    imei: str | None = Field(default=None, pattern=_IDENTITY_VALUE)
    msisdn: str | None = Field(default=None, pattern=_IDENTITY_VALUE)
    operator_id: str | None = Field(default=None, alias="operatorId")
    timestamp: int | None = Field(default=None, ge=0, description="Unix milliseconds")

    @model_validator(mode="after")
    def _names_a_device(self) -> Identity:
        if not self.name:
            msg = "no device identity: turn on Beam's IMSI or SIM ID header for this group"
            raise ValueError(msg)
        return self

    @property
    def name(self) -> str:
        """The most specific identity present (the subject)."""
        ids = (self.imsi, self.sim_id, self.device_id, self.sigfox_device_id, self.lora_device_id, self.imei)
        return next((i for i in (*ids, self.msisdn) if i), "")


class Forwarded(_Model):
    """A request Beam or Funk forwarded, with the identity Soracom added."""

    soracom: Identity


class BeamMessage(Forwarded):
    """``beam`` (HTTP entry point) and ``funk``: the device's JSON body, whatever it is."""

    body: Any


class RawMessage(Forwarded):
    """``udp``/``tcp``: the device's bytes, base64 as Beam sends them and hex for readers."""

    payload: str = Field(description="base64, as Beam encodes the datagram or segment")
    payload_hex: str | None = Field(default=None, alias="payloadHex", description="the same bytes, hex")

    @model_validator(mode="before")
    @classmethod
    def _add_hex(cls, data: Any) -> Any:
        # Always recomputed, so a client-sent payloadHex can never disagree with the payload.
        if isinstance(data, Mapping) and isinstance(data.get("payload"), str):
            raw = _base64(data["payload"])
            data = {k: v for k, v in data.items() if k not in ("payloadHex", "payload_hex")}
            if raw is not None:
                data["payloadHex"] = raw.hex()
        return data

    @field_validator("payload")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        if _base64(value) is None:
            msg = "payload is not valid base64"
            raise ValueError(msg)
        return value


class FunnelMessage(_Model):
    """``funnel``: Funnel's envelope around the device data (``payloads``)."""

    operator_id: str | None = Field(default=None, alias="operatorId")
    credentials_id: str | None = Field(default=None, alias="credentialsId")
    destination: dict[str, Any] | None = None
    source_protocol: str | None = Field(default=None, alias="sourceProtocol")
    payloads: Any
    timestamp: int = Field(ge=0, description="Unix milliseconds, when Funnel received the data")
    imsi: str | None = Field(default=None, pattern=_IDENTITY_VALUE)
    imei: str | None = Field(default=None, pattern=_IDENTITY_VALUE)

    @model_validator(mode="after")
    def _names_a_device(self) -> FunnelMessage:
        if not (self.imsi or self.imei):
            msg = "the Funnel envelope names no device: 'imsi' or 'imei' is needed"
            raise ValueError(msg)
        return self


class Soracom(JsonVendor):
    kind = "soracom"
    type_prefix = "io.soracom."
    subject_is_proven_device = True  # Beam and Funk prove a SIM: a Funnel envelope may not name another
    events = {
        "beam": BeamMessage,
        "udp": RawMessage,
        "tcp": RawMessage,
        "funk": BeamMessage,
        "funnel": FunnelMessage,
    }

    def decode(self, event: str, inbound: Inbound) -> Decoded:
        """The device's body, whatever it is, is one message with Soracom's identity merged in.

        Funnel's envelope is Soracom's own JSON: it takes the common path.
        """
        if event == "funnel":
            return super().decode(event, inbound)
        body = read_json(inbound)
        identity = identity_of(inbound.proven if inbound.proven is not None else inbound.headers)
        if event in ("udp", "tcp") and isinstance(body, dict):
            return Decoded([{**body, "soracom": identity}], batch=False)
        return Decoded([{"soracom": identity, "body": body}], batch=False)

    def identity(self, event: str, inbound: Inbound) -> str:
        """The device and time Soracom stated (signed or token-proven where the source checks that).

        Beam forwards the device's body as it is: two SIMs sending ``{"temp": 21.0}`` are two
        deliveries. Funnel's envelope names its device in the body.
        """
        if event == "funnel":
            return ""
        stated = identity_of(inbound.proven if inbound.proven is not None else inbound.headers)
        return json.dumps(stated, sort_keys=True, separators=(",", ":"))

    def subject(self, payload: BaseModel) -> str:
        """IMSI, else SIM id, else device id, else IMEI: the SIM is what Soracom bills and groups."""
        if isinstance(payload, Forwarded):
            return payload.soracom.name
        if isinstance(payload, FunnelMessage):
            return payload.imsi or payload.imei or ""
        return ""

    def time(self, payload: BaseModel) -> float | None:
        """Soracom's timestamp (milliseconds) in seconds; Beam adds one only with signatures or Inventory."""
        if isinstance(payload, Forwarded):
            millis = payload.soracom.timestamp
        elif isinstance(payload, FunnelMessage):
            millis = payload.timestamp
        else:
            millis = None
        return None if millis is None else millis / 1000

    def reading(self, payload: BaseModel) -> Reading | None:
        """The device, the time and whatever facts the device body holds (see the module docstring).

        Soracom's SIM group is not in what it forwards, so there is no group.
        """
        device = self.subject(payload)
        if not device:
            return None
        seconds = self.time(payload)
        if isinstance(payload, BeamMessage):
            body = payload.body
        elif isinstance(payload, FunnelMessage):
            body = payload.payloads
        else:
            body = None
        return Reading(
            device_id=device,
            time=None if seconds is None else datetime.fromtimestamp(seconds, UTC),
            **_facts(body),
        )


def identity_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The identity headers Soracom added, under the ``soracom`` key names."""
    identity: dict[str, str] = {}
    for header, key in _IDENTITY_HEADERS:
        value = headers.get(header)
        if value:
            identity.setdefault(key, value)
    return identity


def _facts(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        return {}
    facts: dict[str, Any] = {}
    temperature = _number(body, "temperature", "temp")
    if temperature is not None:
        facts["temperature_c"] = temperature
    battery = _number(body, "battery")
    if battery is not None and 0 <= battery <= 100:
        facts["battery_pct"] = battery
    where = next((body[k] for k in ("position", "location", "coords") if isinstance(body.get(k), Mapping)), body)
    lat, lon = _number(where, "lat", "latitude"), _number(where, "lon", "lng", "longitude")
    if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180:
        accuracy = _number(where, "accuracy")
        if accuracy is not None and accuracy < 0:
            accuracy = None
        facts["position"] = Position(lat=lat, lon=lon, accuracy_m=accuracy)
    return facts


def _number(obj: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = obj.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
