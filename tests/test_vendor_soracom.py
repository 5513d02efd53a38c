"""Soracom Beam, Funk and Funnel: identity headers merged, base64 decoded, milliseconds as UTC."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from receiver.errors import InvalidPayloadError
from receiver.vendors import soracom
from receiver.vendors.base import Inbound, Position, VendorOptions

FIXTURES = Path(__file__).parent / "fixtures" / "soracom"
SORACOM = soracom.Soracom(VendorOptions())
IMSI = "295050912345678"
IMEI = "867600012345678"
SIM_ID = "8942310022000012345"
BEAM_HEADERS = {
    "x-soracom-imsi": IMSI,
    "x-soracom-imei": IMEI,
    "x-soracom-sim-id": SIM_ID,
    "x-soracom-timestamp": "1700000000123",
    "user-agent": "SORACOM Beam",
}


def inbound(name: str, headers: dict[str, str] | None = None) -> Inbound:
    return Inbound(body=(FIXTURES / name).read_bytes(), media_type="application/json", headers=headers or {})


def validated(event: str, request: Inbound) -> BaseModel:
    """Validate as the vendor does: its decoded message."""
    model = SORACOM.events[event]
    decoded = SORACOM.decode(event, request)
    return model.model_validate(decoded.items[0])


@pytest.mark.parametrize(
    ("event", "name", "headers", "subject", "when"),
    [
        pytest.param("beam", "beam.json", BEAM_HEADERS, IMSI, 1700000000.123, id="beam-imsi"),
        pytest.param("beam", "beam-text-values.json", {"x-soracom-sim-id": SIM_ID}, SIM_ID, None, id="beam-sim-id"),
        pytest.param("udp", "udp.json", {"x-soracom-imei": IMEI}, IMEI, None, id="udp-imei"),
        pytest.param("tcp", "tcp.json", BEAM_HEADERS, IMSI, 1700000000.123, id="tcp-imsi"),
        pytest.param("funk", "funk.json", {"x-soracom-imsi": IMSI}, IMSI, None, id="funk"),
        pytest.param(
            "beam",
            "beam.json",
            {"x-device-id": "d-abcdef00000012345678"},
            "d-abcdef00000012345678",
            None,
            id="inventory",
        ),
        pytest.param("funnel", "funnel.json", {}, IMSI, 1653891795.421, id="funnel-imsi"),
        pytest.param("funnel", "funnel-udp.json", {}, IMEI, 1653891795.0, id="funnel-imei-string-timestamp"),
    ],
)
def test_fixture_gives_its_subject_and_time(
    event: str, name: str, headers: dict[str, str], subject: str, when: float | None
) -> None:
    """Each fixture validates; the subject is the most specific identity and the time is Soracom's."""
    payload = validated(event, inbound(name, headers))
    assert SORACOM.subject(payload) == subject
    assert SORACOM.time(payload) == when
    found = SORACOM.reading(payload)
    assert found is not None
    assert found.device_id == subject
    assert found.time == (None if when is None else datetime.fromtimestamp(when, UTC))
    assert SORACOM.group(payload) is None


def test_beam_merges_identity_headers_under_soracom() -> None:
    """Beam's identity headers join the body under ``soracom``; other headers stay out."""
    payload = validated("beam", inbound("beam.json", BEAM_HEADERS))
    data = SORACOM.data(payload)
    assert data["soracom"] == {"imsi": IMSI, "imei": IMEI, "simId": SIM_ID, "timestamp": 1700000000123}
    assert data["body"]["humidity"] == 41.0


def test_beam_reading_maps_body_facts_in_units() -> None:
    """A Beam body's temperature, battery and position become the reading's °C, % and position."""
    found = SORACOM.reading(validated("beam", inbound("beam.json", BEAM_HEADERS)))
    assert found is not None
    assert found.temperature_c == 22.5
    assert found.battery_pct == 87
    assert found.position == Position(lat=35.6812, lon=139.7671, accuracy_m=12.0)
    assert found.time == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


def test_facts_that_are_not_numbers_are_ignored() -> None:
    """Text where a number is expected, or half a position, gives no fact rather than an error."""
    found = SORACOM.reading(validated("beam", inbound("beam-text-values.json", {"x-soracom-imsi": IMSI})))
    assert found is not None
    assert (found.temperature_c, found.battery_pct, found.position) == (None, None, None)


@pytest.mark.parametrize(
    ("event", "name", "raw"),
    [
        pytest.param("udp", "udp.json", b"test message\n", id="udp-text"),
        pytest.param("tcp", "tcp.json", bytes([1, 2, 3, 4, 255]), id="tcp-binary"),
    ],
)
def test_base64_payload_is_decoded_to_hex(event: str, name: str, raw: bytes) -> None:
    """The base64 payload is kept and the same bytes are added in hex."""
    data = SORACOM.data(validated(event, inbound(name, {"x-soracom-imsi": IMSI})))
    assert data["payload"] == base64.b64encode(raw).decode()
    assert data["payloadHex"] == raw.hex()
    assert data["soracom"] == {"imsi": IMSI}


def test_client_sent_hex_is_replaced() -> None:
    """A ``payloadHex`` in the body is recomputed, so it always matches the payload."""
    request = Inbound(
        body=b'{"payload": "AQI=", "payloadHex": "ffff"}',
        media_type="application/json",
        headers={"x-soracom-imsi": IMSI},
    )
    assert SORACOM.data(validated("udp", request))["payloadHex"] == "0102"


def test_headers_win_over_a_soracom_key_in_the_body() -> None:
    """A device cannot claim another identity by sending its own ``soracom`` object."""
    request = Inbound(
        body=b'{"payload": "AQI=", "soracom": {"imsi": "001010000000001"}}',
        media_type="application/json",
        headers={"x-soracom-imsi": IMSI},
    )
    assert SORACOM.subject(validated("udp", request)) == IMSI


def test_funnel_milliseconds_become_utc() -> None:
    """Funnel's epoch-millisecond timestamp is the event time, in UTC, and payloads give the facts."""
    payload = validated("funnel", inbound("funnel.json"))
    found = SORACOM.reading(payload)
    assert found is not None
    assert found.time == datetime(2022, 5, 30, 6, 23, 15, 421000, tzinfo=UTC)
    assert found.temperature_c == 54.98
    assert found.position == Position(lat=47.615694, lon=-122.3359976)
    data = SORACOM.data(payload)
    assert data["destination"]["service"] == "aws-iot"
    assert data["credentialsId"] == "AWS-IAM-role-credentials"


@pytest.mark.parametrize(
    ("event", "name", "headers", "locs"),
    [
        pytest.param("funnel", "invalid-funnel-timestamp.json", {}, {"timestamp"}, id="funnel-timestamp-not-number"),
        pytest.param("funnel", "invalid-funnel-no-device.json", {}, {""}, id="funnel-no-imsi-or-imei"),
        pytest.param("udp", "invalid-udp-base64.json", {"x-soracom-imsi": IMSI}, {"payload"}, id="udp-not-base64"),
        pytest.param("udp", "invalid-udp-no-payload.json", {"x-soracom-imsi": IMSI}, {"payload"}, id="udp-no-payload"),
        pytest.param("beam", "beam.json", {}, {"soracom"}, id="beam-without-identity-headers"),
        pytest.param("beam", "beam.json", {"x-soracom-imsi": "a b"}, {"soracom.imsi"}, id="beam-malformed-imsi"),
    ],
)
def test_invalid_request_fails_with_field_paths(event: str, name: str, headers: dict[str, str], locs: set[str]) -> None:
    """An invalid body or missing identity fails validation at the paths that are wrong."""
    with pytest.raises(ValidationError) as caught:
        validated(event, inbound(name, headers))
    assert {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()} == locs


def test_malformed_json_is_refused_as_invalid_payload() -> None:
    """A body that is not JSON is refused with the ``json_invalid`` field error."""
    request = Inbound(body=b'{"payload": NaN}', media_type="application/json", headers={"x-soracom-imsi": IMSI})
    with pytest.raises(InvalidPayloadError) as caught:
        SORACOM.decode("udp", request)
    assert caught.value.errors == [{"loc": "(body)", "type": "json_invalid", "msg": "the body is not valid JSON"}]


def test_soracom_expects_no_answer() -> None:
    """Beam and Funnel take the receiver's normal response; there is no vendor answer."""
    payload: Any = validated("beam", inbound("beam.json", BEAM_HEADERS))
    assert SORACOM.answer("beam", payload) is None
