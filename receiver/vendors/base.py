"""What every vendor module offers, and the one vocabulary device facts are normalized into.

A vendor module (``iotcomms``, ``tracker``, ``sigfox``, ``soracom`` ...) defines:

* ``KIND``, ``TYPE_PREFIX``, ``MEDIA_TYPES``, ``EVENTS`` (callback name -> pydantic model);
* ``decode(event, inbound) -> object | None``: the object to validate, built from the
  request (form fields, query string, vendor headers); ``None`` means "validate the raw
  JSON body as it is", the fast path;
* ``event_data(payload)``, ``subject(payload, domain)``, ``event_time(payload)``,
  ``group(payload)``: what the envelope needs;
* ``reading(payload) -> Reading | None``: the device facts in the one vocabulary;
* ``answer(event, payload, options) -> Answer | None``: a synchronous answer the vendor
  expects in the HTTP response (a Sigfox downlink, an iotcomms action), or ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class Inbound:
    """The request as a vendor module may see it: no credentials, body not yet parsed."""

    body: bytes
    media_type: str  # lower case, without parameters
    charset: str = "utf-8"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names; credentials removed


class Position(BaseModel):
    model_config = ConfigDict(frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0)


class Reading(BaseModel):
    """Device facts with the same names and units whichever vendor sent them."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    time: datetime | None = Field(default=None, description="when the device sent it, UTC")
    position: Position | None = None
    temperature_c: float | None = None
    battery_pct: float | None = Field(default=None, ge=0, le=100)
    rssi_dbm: float | None = None
    snr_db: float | None = None
    sequence: int | None = Field(default=None, description="the vendor's message counter, for gap tracking")
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A synchronous answer the vendor expects: status and JSON body (None: empty)."""

    status: int
    body: Any = None


def no_answer(event: str, payload: Any, options: Mapping[str, Any]) -> Answer | None:
    del event, payload, options
    return None


def no_reading(payload: Any) -> Reading | None:
    del payload
    return None


def raw_json(event: str, inbound: Inbound) -> Any:
    del event, inbound
    return None
