"""The device-tracker platform's per-group Push API: one device message per POST.

The platform posts every incoming message of a group's devices to the backend URL
configured on the group. Its push schema is not published beyond the concepts, so
the model is an assumption written down here and in the README: ``deviceId`` and
``group`` (the group whose push sent it) are required strings; ``timestamp`` (Unix
seconds or RFC 3339), ``position`` (``lat``, ``lon``, ``accuracy`` in metres),
``temperature`` (°C), ``battery`` (%) and the raw ``payload`` (hex) are optional;
unknown fields are kept.

The platform's own tokens (HS512, ``sub``, ``roles``, ``groups`` and ``exp``, no
``iat``, valid two days by default) pass a tracker source's ``jwt`` method as it is:
``TrackerOptions`` sets that method's defaults to them (any key the config sets wins).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from receiver.vendors.base import JsonVendor, Reading, VendorOptions
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


# The platform's tokens: no `iat` (so no age rule), an `exp` always, HMAC-signed.
PLATFORM_TOKEN_DEFAULTS = {"require_iat": False, "require_exp": True, "max_age_seconds": None}


class TrackerOptions(VendorOptions):
    """No keys of its own; the defaults of a tracker source's ``jwt`` method are the platform's tokens."""

    @model_validator(mode="before")
    @classmethod
    def _platform_tokens(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("auth"), list):
            return data
        return {**data, "auth": [_platform_token_defaults(method) for method in data["auth"]]}


def _platform_token_defaults(method: Any) -> Any:
    if not isinstance(method, dict) or method.get("type") != "jwt":
        return method
    defaults: dict[str, Any] = dict(PLATFORM_TOKEN_DEFAULTS)
    if "secrets" in method and not ("public_keys" in method or "jwks_file" in method):
        defaults["algorithms"] = ["HS512"]  # the platform signs with HS512
    return {**defaults, **method}


class Tracker(JsonVendor):
    kind = "tracker"
    type_prefix = "com.tracker."
    events = {"push": TrackerMessage, "message": TrackerMessage}
    Options = TrackerOptions

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
