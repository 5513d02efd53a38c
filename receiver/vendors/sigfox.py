"""Sigfox backend callbacks: their payload models, and how they become events and readings.

Sigfox posts each callback with a body the user writes in the backend as a template of
``{variable}`` placeholders (support.sigfox.com/docs/uplink, /bidir, /data-advanced,
/error-callback, /event-type). So the same callback may arrive as JSON, as a
form-urlencoded body, or as a GET query string, and numbers often arrive as strings
(``"time": "{time}"``): pydantic's lax mode coerces them, and an empty or ``null``
optional number counts as absent. What the models assume, beyond the documentation:

* ``device`` is the device id, 1-8 hex digits; the subject is that id in upper case, the
  way the backend shows it. ``time`` is Unix seconds (a value too large to be seconds is
  taken as milliseconds, which the event callback documentation leaves open).
* ``uplink``/``bidir``/``dataAdvanced`` need ``device``, ``time`` and ``data`` (hex, up
  to 12 bytes); ``bidir`` also needs ``ack``. ``rssi`` is dBm, ``snr``/``avgSnr`` dB.
* ``dataAdvanced``'s ``computedLocation`` is a position (``radius`` in metres) only when
  its ``status`` is 1 (a location was computed) or absent.
* ``status`` carries the out-of-band ``temp`` in °C and ``batt`` in volts; volts say
  nothing about a charge in percent, so ``batt`` stays in the data and not the reading.
* ``error`` names the device in ``device`` or, as in Sigfox's own example, ``devices``;
  ``deviceEvent`` in ``device`` or ``sourceId``. Neither carries device facts.
* the group is the ``deviceTypeId``: Sigfox configures callbacks per device type.

A ``bidir`` callback with ``ack`` true waits for the downlink in the response:
``{"<device>": {"downlinkData": "<16 hex>"}}`` with 200, or 204 for none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from receiver.errors import InvalidPayloadError
from receiver.vendors.base import Answer, Decoded, Inbound, JsonVendor, Position, Reading, VendorOptions

_DEVICE_ID = r"^[0-9A-Fa-f]{1,8}$"
_MAX_FIELDS = 200
_MILLISECONDS_FROM = 10**11  # Unix seconds reach this in the year 5138


def _absent_as_none(value: Any) -> Any:
    """A template placeholder with no value renders as ``""`` or ``null``: the field is absent."""
    if isinstance(value, str) and value.strip().lower() in ("", "null"):
        return None
    return value


OptionalFloat = Annotated[float | None, BeforeValidator(_absent_as_none)]
OptionalInt = Annotated[int | None, BeforeValidator(_absent_as_none)]
OptionalBool = Annotated[bool | None, BeforeValidator(_absent_as_none)]


class SigfoxCallback(BaseModel):
    """Any Sigfox callback: fields it does not know are kept, names as Sigfox sends them."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    time: int = Field(ge=0, description="Unix seconds, UTC")
    device_type_id: str | None = Field(default=None, alias="deviceTypeId")

    @property
    def device_id(self) -> str:
        raise NotImplementedError


class SigfoxMessage(SigfoxCallback):
    """A message from one device, with the network's radio metadata when the contract has it."""

    device: str = Field(pattern=_DEVICE_ID, description="device id, hex")
    seq_number: OptionalInt = Field(default=None, alias="seqNumber", ge=0)
    rssi: OptionalFloat = Field(default=None, description="dBm")
    snr: OptionalFloat = Field(default=None, description="dB")
    avg_snr: OptionalFloat = Field(default=None, alias="avgSnr", description="dB")
    station: str | None = None
    lqi: str | None = None
    link_quality: OptionalInt = Field(default=None, alias="linkQuality")
    duplicate: OptionalBool = None

    @property
    def device_id(self) -> str:
        return self.device


class Uplink(SigfoxMessage):
    """``uplink``: a device's message, sent on reception of its first frame."""

    data: str = Field(pattern=r"^[0-9A-Fa-f]{0,24}$", description="the user data, hex, up to 12 bytes")


class Bidir(Uplink):
    """``bidir``: an uplink that, with ``ack`` true, waits for a downlink in the response."""

    ack: bool
    long_polling: OptionalBool = Field(default=None, alias="longPolling")


class ComputedLocation(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    lat: OptionalFloat = Field(default=None, ge=-90, le=90)
    lng: OptionalFloat = Field(default=None, ge=-180, le=180)
    radius: OptionalFloat = Field(default=None, ge=0, description="metres")
    source: OptionalInt = None
    status: OptionalInt = Field(default=None, description="1: a location was computed")


class Duplicate(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    bs_id: str | None = Field(default=None, alias="bsId")
    rssi: OptionalFloat = Field(default=None, description="dBm")
    snr: OptionalFloat = Field(default=None, description="dB")
    nb_rep: OptionalInt = Field(default=None, alias="nbRep")


class DataAdvanced(Uplink):
    """``dataAdvanced``: the uplink about 30 s later, with location and network metadata."""

    computed_location: ComputedLocation | None = Field(default=None, alias="computedLocation")
    duplicates: list[Duplicate] | None = None
    fixed_lat: OptionalFloat = Field(default=None, alias="fixedLat", ge=-90, le=90)
    fixed_lng: OptionalFloat = Field(default=None, alias="fixedLng", ge=-180, le=180)
    operator_name: str | None = Field(default=None, alias="operatorName")
    country_code: OptionalInt = Field(default=None, alias="countryCode")


class Status(SigfoxMessage):
    """``status``: the device's out-of-band status message."""

    temp: OptionalFloat = Field(default=None, description="°C")
    batt: OptionalFloat = Field(default=None, description="volts")


class SigfoxError(SigfoxCallback):
    """``error``: the keep-alive was breached (``ERROR``) or the network warns (``WARN``)."""

    device: str | None = Field(default=None, pattern=_DEVICE_ID)
    devices: str | None = Field(default=None, pattern=_DEVICE_ID, description="the name in Sigfox's example")
    info: str | None = None
    severity: str | None = None

    @model_validator(mode="after")
    def _names_a_device(self) -> SigfoxError:
        if not (self.device or self.devices):
            msg = "an error callback needs the device id in 'device'"
            raise ValueError(msg)
        return self

    @property
    def device_id(self) -> str:
        return self.device or self.devices or ""


class DeviceEvent(SigfoxCallback):
    """``deviceEvent``: an event on the device's cloud entity (contract, sequence gap, ...)."""

    device: str | None = Field(default=None, pattern=_DEVICE_ID)
    source_id: str | None = Field(default=None, alias="sourceId", min_length=1, max_length=64)
    source_type: str | None = Field(default=None, alias="sourceType")
    event_type: str | None = Field(default=None, alias="eventType")
    severity: str | None = None
    group_id: str | None = Field(default=None, alias="groupId")

    @model_validator(mode="after")
    def _names_a_device(self) -> DeviceEvent:
        if not (self.device or self.source_id):
            msg = "a device event needs the device id in 'device' or 'sourceId'"
            raise ValueError(msg)
        return self

    @property
    def device_id(self) -> str:
        return self.device or self.source_id or ""


DeviceId = Annotated[str, StringConstraints(pattern=_DEVICE_ID)]
Downlink = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{16}$")]


class SigfoxSettings(BaseModel):
    """``options`` of a Sigfox source: the downlink each ``bidir`` device gets (8 bytes, hex)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    downlinks: dict[DeviceId, Downlink] = Field(
        default_factory=dict, description="device id (1-8 hex) -> exactly 16 hex characters"
    )

    @field_validator("downlinks")
    @classmethod
    def _upper_case(cls, value: dict[str, str]) -> dict[str, str]:
        """Device ids match case-insensitively: kept in upper case, as the backend shows them."""
        return {device.upper(): data for device, data in value.items()}


class SigfoxOptions(VendorOptions):
    options: SigfoxSettings = SigfoxSettings()


class Sigfox(JsonVendor):
    kind = "sigfox"
    type_prefix = "com.sigfox."
    media_types = frozenset({"application/json", "application/x-www-form-urlencoded", ""})
    events = {
        "uplink": Uplink,
        "bidir": Bidir,
        "dataAdvanced": DataAdvanced,
        "status": Status,
        "error": SigfoxError,
        "deviceEvent": DeviceEvent,
    }
    Options = SigfoxOptions

    def __init__(self, options: SigfoxOptions) -> None:
        super().__init__(options)
        self.downlinks = options.options.downlinks

    def decode(self, event: str, inbound: Inbound) -> Decoded:
        """Form and query-string callbacks are one message of strings; JSON as any vendor's."""
        if inbound.media_type == "":
            return Decoded([dict(inbound.query)], batch=False)
        if inbound.media_type != "application/x-www-form-urlencoded":
            return super().decode(event, inbound)
        try:
            text = inbound.body.decode(inbound.charset)
            pairs = parse_qsl(
                text, keep_blank_values=True, encoding=inbound.charset, errors="strict", max_num_fields=_MAX_FIELDS
            )
        except UnicodeError as exc:  # UnicodeDecodeError, and what some codecs raise instead
            msg = f"the body is not valid {inbound.charset}"
            raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "encoding", "msg": msg}]) from exc
        except ValueError as exc:
            msg = f"the form has more than {_MAX_FIELDS} fields"
            raise InvalidPayloadError(msg, [{"loc": "(body)", "type": "too_many_fields", "msg": msg}]) from exc
        fields: dict[str, str] = {}
        for name, value in pairs:
            fields.setdefault(name, value)  # a repeated name keeps its first value, as the query string does
        return Decoded([fields], batch=False)

    def identity(self, event: str, inbound: Inbound) -> str:
        """A GET callback carries everything in its query string: that is the delivery."""
        del event
        if inbound.media_type != "":
            return ""
        return urlencode(sorted(inbound.query.items()))

    def subject(self, payload: SigfoxCallback) -> str:
        """The device id in upper case, so one device keys one Kafka partition however it was typed."""
        return payload.device_id.upper()

    def time(self, payload: SigfoxCallback) -> float | None:
        return _epoch_seconds(payload.time)

    def group(self, payload: SigfoxCallback) -> str | None:
        return payload.device_type_id

    def reading(self, payload: SigfoxCallback) -> Reading | None:
        """What a device message says about the device; errors and events say nothing of it."""
        if not isinstance(payload, SigfoxMessage):
            return None
        return Reading(
            device_id=self.subject(payload),
            time=datetime.fromtimestamp(_epoch_seconds(payload.time), UTC),
            position=_position(payload),
            temperature_c=payload.temp if isinstance(payload, Status) else None,
            rssi_dbm=_best(payload, "rssi"),
            snr_db=_best(payload, "snr"),
            sequence=payload.seq_number,
            group=payload.device_type_id,
        )

    def answer(self, event: str, payload: Any) -> Answer | None:
        """A ``bidir`` callback with ``ack`` gets its configured downlink (200) or none (204)."""
        if event != "bidir" or not isinstance(payload, Bidir) or not payload.ack:
            return None
        data = self.downlinks.get(payload.device.upper())
        if data is None:
            return Answer(204)
        return Answer(200, {payload.device: {"downlinkData": data}})


def _epoch_seconds(value: int) -> float:
    return value / 1000 if value >= _MILLISECONDS_FROM else float(value)


def _position(payload: SigfoxMessage) -> Position | None:
    location = payload.computed_location if isinstance(payload, DataAdvanced) else None
    if location is None or location.lat is None or location.lng is None or location.status not in (None, 1):
        return None
    return Position(lat=location.lat, lon=location.lng, accuracy_m=location.radius)


def _best(payload: SigfoxMessage, field: str) -> float | None:
    """This message's value, else the best among ``dataAdvanced``'s duplicates, else ``avgSnr`` for SNR."""
    own: float | None = getattr(payload, field)
    if own is not None:
        return own
    if isinstance(payload, DataAdvanced) and payload.duplicates:
        values: list[float] = [v for v in (getattr(d, field) for d in payload.duplicates) if v is not None]
        if values:
            return max(values)
    return payload.avg_snr if field == "snr" else None
