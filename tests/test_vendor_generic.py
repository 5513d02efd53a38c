"""Generic sources: JSON Schema validation with field paths, and device facts from JSON Pointers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from receiver.vendors import generic
from receiver.vendors.base import Reading
from receiver.vendors.generic import GenericSettings, SchemaValidator

FIXTURES = Path(__file__).parent / "fixtures" / "generic"


def pointers(**given: str) -> GenericSettings:
    """A generic source's settings with these pointers (the schema file is the fixture's)."""
    return GenericSettings(schema_file=FIXTURES / "schema.json", **given)


OPTIONS = pointers(device_id_pointer="/meter/serial", time_pointer="/readAt", group_pointer="/meter/site")


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def schema() -> SchemaValidator:
    return SchemaValidator.from_file(FIXTURES / "schema.json")


@pytest.mark.parametrize(
    ("name", "device", "when", "site"),
    [
        pytest.param(
            "message.json", "EM0042", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "stockholm-1", id="offset"
        ),
        pytest.param("message-epoch.json", "EM0043", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None, id="epoch"),
        pytest.param(
            "message-utc.json", "EM0044", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "gothenburg-2", id="z"
        ),
    ],
)
def test_valid_message_gives_subject_time_and_group(
    schema: SchemaValidator, name: str, device: str, when: datetime, site: str | None
) -> None:
    """A conforming message has no errors and yields the device, UTC time and group at the pointers."""
    obj = body(name)
    assert schema.validate(obj) == []
    assert generic.pointer_errors(obj, OPTIONS) == []
    payload = generic.GenericMessage.model_validate(obj)
    data = payload.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert data == obj, "the data is the body as sent, unknown fields kept"
    assert generic.subject(data, OPTIONS) == device
    assert generic.event_time(data, OPTIONS) == when.timestamp()
    assert generic.group(data, OPTIONS) == site
    assert generic.reading(data, OPTIONS) == Reading(device_id=device, time=when, group=site)


def test_schema_errors_name_paths_and_keywords(schema: SchemaValidator) -> None:
    """Every violation is reported once, at its dotted path, with the keyword that failed."""
    errors = schema.validate(body("invalid-message.json"))
    assert {(e["loc"], e["type"]) for e in errors} == {
        ("meter.serial", "required"),
        ("meter.site", "minLength"),
        ("readAt", "type"),
        ("values.0.value", "minimum"),
        ("values.0.unit", "const"),
        ("values.1.register", "enum"),
        ("values.1.value", "type"),
        ("apiKey", "maxLength"),
    }
    assert next(e for e in errors if e["type"] == "minimum")["msg"] == "minimum failed: the schema says minimum 0"


def test_schema_errors_never_echo_the_body(schema: SchemaValidator) -> None:
    """No message repeats a value from the body, such as the secret that broke ``maxLength``."""
    errors = schema.validate(body("invalid-message.json"))
    text = json.dumps(errors)
    for value in ("sk-live-very-secret-value", "MWh", "solar", "lots", "-1"):
        assert value not in text


def test_root_and_array_errors(schema: SchemaValidator) -> None:
    """Errors at the root are located at ``(body)``; array and pattern errors at their field."""
    assert schema.validate([1, 2]) == [
        {"loc": "(body)", "type": "type", "msg": 'type failed: the schema says type "object"'}
    ]
    errors = schema.validate(body("invalid-message-empty.json"))
    assert {(e["loc"], e["type"]) for e in errors} == {("meter.serial", "pattern"), ("values", "minItems")}


def test_pointer_errors_for_missing_device_and_naive_time() -> None:
    """A missing device id and a time without an offset are field errors at their pointers."""
    obj = {"meter": {}, "readAt": "2023-11-14T22:13:20"}
    assert generic.pointer_errors(obj, OPTIONS) == [
        {"loc": "meter.serial", "type": "device_id", "msg": "a non-empty string or integer device id is required"},
        {"loc": "readAt", "type": "time", "msg": "must be Unix seconds or an RFC 3339 time with an offset"},
    ]
    assert generic.reading(obj, OPTIONS) is None
    assert generic.event_time(obj, OPTIONS) is None


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        pytest.param("/deviceId", "d-1", id="top-level"),
        pytest.param("/tags/0/id", "tag-0", id="array-index"),
        pytest.param("/a~1b/c~0d", 42, id="escaped"),
        pytest.param("/tags/01/id", "", id="leading-zero-is-not-an-index"),
        pytest.param("/tags/9/id", "", id="index-out-of-range"),
        pytest.param("/missing", "", id="missing"),
    ],
)
def test_device_id_pointer(pointer: str, expected: str | int) -> None:
    """JSON Pointers resolve as RFC 6901 says; an integer id becomes text, a missing one empty."""
    obj = {"deviceId": "d-1", "tags": [{"id": "tag-0"}, {"id": "tag-1"}], "a/b": {"c~d": 42}}
    assert generic.subject(obj, pointers(device_id_pointer=pointer)) == str(expected)


def test_default_options_read_device_id_and_no_time() -> None:
    """By default the device id is ``/deviceId`` and the receive time stands in for the event time."""
    obj = {"deviceId": "d-1", "time": 1700000000}
    assert generic.subject(obj, pointers()) == "d-1"
    assert generic.event_time(obj, pointers()) is None
    assert generic.group(obj, pointers()) is None


def test_invalid_schema_is_refused_at_load() -> None:
    """A schema that is not valid draft 2020-12 fails loading with a message naming the file and place."""
    with pytest.raises(
        ValueError, match=r"invalid-schema\.json.*not a valid draft 2020-12 JSON Schema.*properties/meter"
    ):
        SchemaValidator.from_file(FIXTURES / "invalid-schema.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(None, "cannot read", id="missing-file"),
        pytest.param("{not json", "not valid JSON", id="not-json"),
    ],
)
def test_unreadable_schema_file_is_refused(tmp_path: Path, content: str | None, match: str) -> None:
    """A schema file that cannot be read or parsed fails loading with a clear message."""
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=match):
        SchemaValidator.from_file(path)


def test_pointer_option_must_be_a_pointer() -> None:
    """An option that is not a JSON Pointer is refused when the options are built."""
    with pytest.raises(ValueError, match="not a JSON Pointer"):
        pointers(device_id_pointer="deviceId")


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("https://example.invalid/schema.json", id="remote"),
        pytest.param("other.json#/x", id="relative-file"),
        pytest.param("#/$defs/missing", id="local-missing"),
    ],
)
def test_refs_outside_the_schema_are_refused_at_load(ref: str) -> None:
    """A ``$ref`` that would need fetching, or names nothing, fails loading instead of a request."""
    with pytest.raises(ValueError, match=r"points to nothing inside the schema"):
        SchemaValidator({"properties": {"a": {"$ref": ref}}, "$defs": {"serial": {"type": "string"}}})


@pytest.mark.parametrize(
    "node",
    [
        pytest.param({"$dynamicRef": "http://127.0.0.1:9/meta"}, id="remote-dynamic-ref"),
        pytest.param({"$dynamicRef": "meta.json#node"}, id="relative-dynamic-ref"),
        pytest.param({"$id": "https://example.invalid/schema.json"}, id="nested-remote-id"),
        pytest.param({"$id": "urn:example:schema"}, id="nested-urn-id"),
    ],
)
def test_nothing_in_a_schema_can_fetch(node: dict[str, str]) -> None:
    """A remote ``$dynamicRef`` or ``$id`` fails loading: no request ever opens a connection (was: fetched)."""
    with pytest.raises(ValueError, match=r"\$dynamicRef|\$id"):
        SchemaValidator({"properties": {"a": node}})


def test_an_unresolvable_anchor_is_a_field_error_not_a_fetch() -> None:
    """A local ``$dynamicRef`` naming no anchor gives a schema error for the body, never a 5xx or a fetch."""
    validator = SchemaValidator({"properties": {"a": {"$dynamicRef": "#nowhere"}}})
    assert validator.validate({"a": 1}) == [
        {
            "loc": "(schema)",
            "type": "unresolvable",
            "msg": "the source's JSON Schema has a reference that names nothing; fix the schema",
        }
    ]


def test_local_refs_validate() -> None:
    """A ``$ref`` into ``$defs`` works, with errors at the referring field's path."""
    validator = SchemaValidator(
        {"properties": {"a": {"$ref": "#/$defs/serial"}}, "$defs": {"serial": {"type": "string"}}}
    )
    assert validator.validate({"a": "x"}) == []
    assert [e["loc"] for e in validator.validate({"a": 1})] == ["a"]
