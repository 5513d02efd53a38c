"""The device-tracker platform's per-group Push API: one device message per POST.

The platform posts every incoming message of a group's devices to the backend URL
configured on the group. Its push schema is not published beyond the concepts, so
the model is an assumption written down here and in the README: ``deviceId`` and
``group`` (the group whose push sent it) are required strings; ``timestamp`` (Unix
seconds or RFC 3339), ``position`` (``lat``, ``lon``, ``accuracy`` in metres),
``temperature`` (°C), ``battery`` (%) and the raw ``payload`` (hex) are optional;
unknown fields are kept.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from receiver.vendors.base import JsonVendor, Reading
from receiver.vendors.base import Position as ReadingPosition


class Position(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy: float | None = Field(default=None, ge=0, description="metres")


class TrackerMessage(BaseModel):
    """A device message pushed for one group."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    device_id: str = Field(alias="deviceId", min_length=1, max_length=128)
    group: str = Field(min_length=1, max_length=128)
    timestamp: datetime | float | None = None
    position: Position | None = None
    temperature: float | None = Field(default=None, description="°C")
    battery: float | None = Field(default=None, ge=0, le=100, description="%")
    payload: str | None = Field(default=None, description="the raw frame, hex")
    frame_counter: int | None = Field(default=None, alias="frameCounter", ge=0, description="the device's counter")


class Tracker(JsonVendor):
    kind = "tracker"
    type_prefix = "com.tracker."
    events = {"push": TrackerMessage, "message": TrackerMessage}

    def subject(self, payload: TrackerMessage) -> str:
        return payload.device_id

    def time(self, payload: TrackerMessage) -> float | None:
        if isinstance(payload.timestamp, datetime):
            return payload.timestamp.timestamp()
        return payload.timestamp

    def group(self, payload: TrackerMessage) -> str | None:
        return payload.group

    def reading(self, payload: TrackerMessage) -> Reading:
        """The message's facts in the one vocabulary (the tracker already uses °C and %)."""
        when = self.time(payload)
        position = payload.position
        return Reading(
            device_id=payload.device_id,
            time=None if when is None else datetime.fromtimestamp(when, UTC),
            position=None
            if position is None
            else ReadingPosition(lat=position.lat, lon=position.lon, accuracy_m=position.accuracy),
            temperature_c=payload.temperature,
            battery_pct=payload.battery,
            sequence=payload.frame_counter,
            group=payload.group,
        )
