"""Sigfox callbacks: decoding JSON, form and query bodies, validation, readings and the bidir answer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pydantic import ValidationError

from receiver.errors import ConfigError, InvalidPayloadError
from receiver.settings import build_settings
from receiver.sources import build_sources
from receiver.vendors import sigfox
from receiver.vendors.base import Answer, Inbound, Position

FIXTURES = Path(__file__).parent / "fixtures" / "sigfox"
DEVICE_TYPE = "5f1e2d3c4b5a69788796a5b4"
SIGFOX = sigfox.Sigfox(sigfox.SigfoxOptions())


def with_downlinks(downlinks: dict[str, str]) -> sigfox.Sigfox:
    """A Sigfox vendor bound to a source's downlinks, as the settings validate them."""
    return sigfox.Sigfox(sigfox.SigfoxOptions.model_validate({"options": {"downlinks": downlinks}}))


def inbound(name: str) -> Inbound:
    """The request a fixture stands for: JSON, form-encoded, or a GET query string."""
    body = (FIXTURES / name).read_bytes()
    if name.endswith(".form"):
        return Inbound(body=body, media_type="application/x-www-form-urlencoded")
    if name.endswith(".query"):
        return Inbound(body=b"", media_type="", query=dict(parse_qsl(body.decode(), keep_blank_values=True)))
    return Inbound(body=body, media_type="application/json")


def validated(event: str, request: Inbound) -> Any:
    """Validate as the vendor does: its decoded message."""
    model = SIGFOX.events[event]
    decoded = SIGFOX.decode(event, request)
    return model.model_validate(decoded.items[0])


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ("event", "name", "expected"),
    [
        pytest.param(
            "uplink",
            "uplink.json",
            {"time": at(1700000000), "rssi_dbm": -121.5, "snr_db": 12.34, "sequence": 123, "group": DEVICE_TYPE},
            id="uplink-json",
        ),
        pytest.param(
            "uplink",
            "uplink-strings.json",
            {"time": at(1700000060), "rssi_dbm": -119.0, "snr_db": 10.5, "sequence": 124, "group": None},
            id="uplink-json-numbers-as-strings",
        ),
        pytest.param(
            "uplink",
            "uplink.form",
            {"time": at(1700000120), "rssi_dbm": -118.5, "snr_db": 9.8, "sequence": 125, "group": DEVICE_TYPE},
            id="uplink-form",
        ),
        pytest.param(
            "uplink",
            "uplink.query",
            {"time": at(1700000180), "rssi_dbm": None, "snr_db": 8.75, "sequence": 126, "group": None},
            id="uplink-query-empty-rssi",
        ),
        pytest.param(
            "bidir",
            "bidir.json",
            {"time": at(1700000240), "rssi_dbm": None, "snr_db": None, "sequence": 127},
            id="bidir-json",
        ),
        pytest.param(
            "bidir", "bidir-noack.form", {"time": at(1700000300), "sequence": 128}, id="bidir-form-without-ack"
        ),
        pytest.param(
            "dataAdvanced",
            "data-advanced.json",
            {
                "time": at(1700000000),
                "position": Position(lat=59.3293, lon=18.0686, accuracy_m=1500),
                "rssi_dbm": -109.0,
                "snr_db": 18.75,
                "sequence": 123,
            },
            id="data-advanced-best-duplicate-and-location",
        ),
        pytest.param(
            "dataAdvanced",
            "data-advanced-no-location.json",
            {"position": None, "rssi_dbm": -135.0, "snr_db": 6.5},
            id="data-advanced-location-unavailable",
        ),
        pytest.param(
            "status",
            "status.json",
            {"time": at(1700003600), "temperature_c": 21.5, "battery_pct": None, "rssi_dbm": -117.0, "sequence": 130},
            id="status-temperature-celsius",
        ),
    ],
)
def test_fixture_gives_its_documented_reading(event: str, name: str, expected: dict[str, Any]) -> None:
    """Each device-message fixture validates and yields the documented subject, UTC time and facts."""
    payload = validated(event, inbound(name))
    found = SIGFOX.reading(payload)
    assert found is not None
    assert found.device_id == "1A2B3C"
    assert SIGFOX.subject(payload) == "1A2B3C"
    for fact, value in expected.items():
        assert getattr(found, fact) == value, fact
    assert found.time is not None
    assert found.time.tzinfo is UTC
    assert SIGFOX.time(payload) == found.time.timestamp()


@pytest.mark.parametrize(
    ("event", "name", "seconds"),
    [
        pytest.param("error", "error.json", 1700086400, id="error-devices-key"),
        pytest.param("deviceEvent", "device-event.json", 1700000400, id="device-event-source-id"),
    ],
)
def test_error_and_event_name_the_device_but_carry_no_reading(event: str, name: str, seconds: int) -> None:
    """Error and event callbacks give the device as subject and their time, but no device facts."""
    payload = validated(event, inbound(name))
    assert SIGFOX.subject(payload) == "1A2B3C"
    assert SIGFOX.time(payload) == seconds
    assert SIGFOX.reading(payload) is None


def test_numbers_sent_as_strings_are_coerced() -> None:
    """Quoted placeholders become numbers and booleans in the event data."""
    payload = validated("uplink", inbound("uplink-strings.json"))
    data = SIGFOX.data(payload)
    assert data["time"] == 1700000060
    assert data["seqNumber"] == 124
    assert data["rssi"] == -119.0
    assert data["avgSignal"] == "14.20", "an unknown field is kept as sent"
    bidir = validated("bidir", inbound("bidir.json"))
    assert isinstance(bidir, sigfox.Bidir)
    assert bidir.ack is True
    assert bidir.long_polling is False


def test_event_data_keeps_sigfox_names_and_only_what_was_sent() -> None:
    """The data uses Sigfox's camelCase names and adds no defaulted fields."""
    payload = validated("dataAdvanced", inbound("data-advanced.json"))
    data = SIGFOX.data(payload)
    assert data["computedLocation"] == {"lat": 59.3293, "lng": 18.0686, "radius": 1500.0, "source": 2, "status": 1}
    assert data["duplicates"][1] == {"bsId": "0C2D", "rssi": -109.0, "snr": 18.75, "nbRep": 2}
    assert "ack" not in data
    assert "station" not in data


def test_form_honours_the_charset() -> None:
    """A latin-1 form body decodes with its declared charset, percent-escapes included."""
    body = "device=1a2b3c&time=1700000000&data=00&station=Göteborg%E9".encode("latin-1")
    request = Inbound(body=body, media_type="application/x-www-form-urlencoded", charset="latin-1")
    payload = validated("uplink", request)
    assert isinstance(payload, sigfox.Uplink)
    assert payload.station == "Göteborgé"
    assert SIGFOX.subject(payload) == "1A2B3C", "the subject is upper case whatever was sent"


def test_form_repeated_field_keeps_the_first_value() -> None:
    """A field sent twice keeps its first value, so a later copy cannot override it."""
    request = Inbound(
        body=b"device=1A2B3C&time=1700000000&data=00&device=FFFF", media_type="application/x-www-form-urlencoded"
    )
    assert SIGFOX.decode("uplink", request).items[0]["device"] == "1A2B3C"


@pytest.mark.parametrize(
    ("event", "name", "locs"),
    [
        pytest.param("uplink", "invalid-uplink-device.json", {"device"}, id="device-not-hex"),
        pytest.param("uplink", "invalid-uplink-missing-time.json", {"time", "seqNumber"}, id="missing-time-bad-seq"),
        pytest.param("bidir", "invalid-bidir-ack.json", {"ack"}, id="ack-not-boolean"),
        pytest.param(
            "dataAdvanced",
            "invalid-data-advanced-location.json",
            {"computedLocation.lat", "computedLocation.radius"},
            id="location-out-of-range",
        ),
        pytest.param("error", "invalid-error-no-device.json", {""}, id="error-without-device"),
    ],
)
def test_invalid_fixture_fails_with_field_paths(event: str, name: str, locs: set[str]) -> None:
    """An invalid body fails validation at the paths of the fields that are wrong."""
    with pytest.raises(ValidationError) as caught:
        validated(event, inbound(name))
    assert {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()} == locs


def test_bidir_answers_with_the_configured_downlink() -> None:
    """A bidir callback with ack gets its device's 8-byte downlink, keyed by the device id as sent."""
    payload = validated("bidir", inbound("bidir.json"))
    vendor = with_downlinks({"1a2b3c": "DEADBEEFCAFEBABE"})
    assert vendor.answer("bidir", payload) == Answer(200, {"1A2B3C": {"downlinkData": "DEADBEEFCAFEBABE"}})


def test_bidir_without_a_configured_downlink_answers_no_content() -> None:
    """A bidir callback with ack but nothing configured for its device gets 204."""
    payload = validated("bidir", inbound("bidir.json"))
    assert with_downlinks({"FFFF": "0011223344556677"}).answer("bidir", payload) == Answer(204)
    assert SIGFOX.answer("bidir", payload) == Answer(204)


@pytest.mark.parametrize(
    ("event", "name"),
    [
        pytest.param("bidir", "bidir-noack.form", id="bidir-ack-false"),
        pytest.param("uplink", "uplink.json", id="uplink"),
    ],
)
def test_no_answer_without_ack(event: str, name: str) -> None:
    """Only a bidir callback asking for an ack gets a downlink answer."""
    payload = validated(event, inbound(name))
    assert with_downlinks({"1A2B3C": "0011223344556677"}).answer(event, payload) is None


@pytest.mark.parametrize(
    "downlinks",
    [
        pytest.param({"1A2B3C": "0011"}, id="too-short"),
        pytest.param({"1A2B3C": "00112233445566778"}, id="too-long"),
        pytest.param({"1A2B3C": "00112233445566zz"}, id="not-hex"),
        pytest.param({"1A2B3C": 1234}, id="not-text"),
        pytest.param({"not a device": "0011223344556677"}, id="bad-device-id"),
        pytest.param(["0011223344556677"], id="not-a-mapping"),
    ],
)
def test_malformed_downlink_configuration_is_refused(downlinks: Any) -> None:
    """A downlink that is not exactly 16 hex characters, or not keyed by a device id, fails the config check."""
    source = {
        "kind": "sigfox",
        "options": {"downlinks": downlinks},
        "auth": [{"type": "hmac", "secrets": [{"value": "s"}]}],
    }
    with pytest.raises(ConfigError) as caught:
        build_settings({"sources": {"sfx": source}}, environ=False)
    assert all(p.startswith("sources.sfx.options.downlinks") for p in caught.value.problems), caught.value.problems


def test_millisecond_times_are_recognised() -> None:
    """A time too large for Unix seconds is read as milliseconds."""
    payload = sigfox.DeviceEvent.model_validate({"time": 1700000400123, "sourceId": "1A2B3C"})
    assert SIGFOX.time(payload) == pytest.approx(1700000400.123)


def test_too_many_form_fields_are_refused() -> None:
    """A form with hundreds of fields is refused before validation."""
    body = "&".join(f"f{i}=1" for i in range(500)).encode()
    with pytest.raises(InvalidPayloadError):
        SIGFOX.decode("uplink", Inbound(body=body, media_type="application/x-www-form-urlencoded"))


@pytest.mark.parametrize(
    "method",
    [
        pytest.param({"type": "hmac", "secrets": [{"value": "s"}]}, id="hmac"),
        pytest.param(
            {"type": "standard_webhooks", "secrets": [{"value": "whsec_c2VjcmV0LXNlY3JldA=="}]}, id="webhooks"
        ),
    ],
)
def test_a_body_only_signature_is_refused_for_a_vendor_that_reads_queries(method: dict[str, Any]) -> None:
    """A MAC of the body cannot vouch for a message read from the query string: refused at load (was: BADBAD stored)."""
    settings = build_settings({"sources": {"sfx": {"kind": "sigfox", "auth": [method]}}}, environ=False)
    with pytest.raises(ConfigError) as caught:
        build_sources(settings)
    assert [p.split(":")[0] for p in caught.value.problems] == ["sources.sfx.auth.0"]
    assert "query string" in caught.value.problems[0]


def test_a_body_only_signature_is_taken_where_the_body_is_the_message() -> None:
    """The same HMAC is fine for a vendor that only posts bodies (the tracker)."""
    method = {"type": "hmac", "secrets": [{"value": "s"}]}
    settings = build_settings({"sources": {"trk": {"kind": "tracker", "auth": [method]}}}, environ=False)
    assert "trk" in build_sources(settings)
