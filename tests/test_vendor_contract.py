"""The vendor contract, run over every registered vendor: one message, a batch, forms, bad items.

Each vendor in ``VENDORS`` needs a ``Sample`` here; a vendor added without one fails
``test_every_vendor_has_a_sample``. The requests go through the running app (dry runs:
every step, nothing published), so parse, decode, check, identity and the envelope are
judged the way a sender meets them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.settings import build_settings
from receiver.vendors import VENDORS
from tests.conftest import DOMAIN, message_body

TOKEN = "vendor-contract-token-0123456789"
ADMIN = "vendor-contract-admin"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-Dry-Run-Token": ADMIN}
SCHEMAS = Path(__file__).parent.parent / "schemas"
IMSI = "440101234567890"
GENERIC_SCHEMA = {
    "type": "object",
    "required": ["deviceId", "temp"],
    "properties": {"deviceId": {"type": "string"}, "temp": {"type": "number"}},
}


@dataclass(frozen=True)
class Sample:
    """What one vendor sends, and what the contract expects of it."""

    event: str
    message: dict[str, Any]
    subject: str  # the subject (Kafka key) the message must give
    invalid: dict[str, Any]  # a message that its model or its check refuses
    array_is_batch: bool = True  # False: a JSON array body is one message (Soracom Beam)
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


SAMPLES: dict[str, Sample] = {
    "iotcomms": Sample("message", message_body(), DOMAIN, message_body(replyId=""), settings={"domain": DOMAIN}),
    "tracker": Sample("push", {"deviceId": "trk-1", "group": "g1", "temperature": 21.5}, "trk-1", {"group": "g1"}),
    "sigfox": Sample(
        "uplink",
        {"device": "1a2b3c", "time": 1700000000, "data": "0a1b", "seqNumber": 5},
        "1A2B3C",
        {"device": "not-hex", "time": 1700000000, "data": "0a1b"},
    ),
    "soracom": Sample(
        "beam",
        {"temp": 21.0},
        IMSI,
        {"temp": 21.0},  # valid as a body: Beam refuses only a request naming no device (below)
        array_is_batch=False,
        headers={"X-Soracom-Imsi": IMSI},
    ),
    "generic": Sample(
        "message",
        {"deviceId": "meter-7", "temp": 3.5},
        "meter-7",
        {"deviceId": "meter-7", "temp": "warm"},
        settings={"generic": {"schema_file": "(written by the fixture)"}},
    ),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    directory = tmp_path_factory.mktemp("contract")
    schema = directory / "schema.json"
    schema.write_text(json.dumps(GENERIC_SCHEMA))
    auth = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    sources = {}
    for kind, sample in SAMPLES.items():
        extra = dict(sample.settings)
        if "generic" in extra:
            extra["generic"] = {"schema_file": str(schema)}
        sources[kind] = {"kind": kind, "auth": auth, **extra}
    settings = build_settings(
        {
            "store": {"path": str(directory / "events.db")},
            "audit": {"enabled": False},
            "dry_run": {"enabled": True, "token_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()},
            "sources": sources,
        },
        environ=False,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def dry_run(client: TestClient, kind: str, body: Any, **headers: str) -> Any:
    sample = SAMPLES[kind]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"/v1/dry-run/{kind}/{sample.event}",
        content=content,
        headers={**HEADERS, "Content-Type": "application/json", **sample.headers, **headers},
    )


def test_every_vendor_has_a_sample() -> None:
    """A vendor joins the registry only with a contract sample: this list is the registry's."""
    assert set(SAMPLES) == set(VENDORS)


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_one_message_becomes_one_envelope(client: TestClient, kind: str) -> None:
    """A single object is validated, checked, named by its identity, and its envelope meets the schema."""
    sample, vendor = SAMPLES[kind], VENDORS[kind]
    answer = dry_run(client, kind, sample.message)
    assert answer.status_code == 200, answer.text
    (event,) = answer.json()["events"]
    assert event["type"] == vendor.type_prefix + sample.event
    assert event["subject"] == sample.subject
    assert answer.json()["records"][0]["key"] == sample.subject
    schema = json.loads((SCHEMAS / "events" / f"{event['type']}.json").read_text())
    assert not list(Draft202012Validator(schema).iter_errors(event))


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_an_array_follows_the_vendor_batch_rule(client: TestClient, kind: str) -> None:
    """A batch's items are parsed, decoded and checked exactly as the single message is."""
    sample = SAMPLES[kind]
    single = dry_run(client, kind, sample.message).json()["events"][0]
    answer = dry_run(client, kind, [sample.message, sample.message])
    assert answer.status_code == 200, answer.text
    events = answer.json()["events"]
    if sample.array_is_batch:
        assert [e["subject"] for e in events] == [sample.subject, sample.subject]
        assert [e["data"] for e in events] == [single["data"], single["data"]]
        assert len({e["id"] for e in events}) == 2, "each item has an id of its own"
    else:
        (event,) = events
        assert event["subject"] == sample.subject, "the array is one message, identity merged"


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_an_invalid_item_refuses_the_whole_batch(client: TestClient, kind: str) -> None:
    """One bad item in a batch is a 422 naming its index; a lone bad message is a 422 too."""
    sample = SAMPLES[kind]
    if not sample.array_is_batch:
        answer = dry_run(client, kind, sample.message, **dict.fromkeys(sample.headers, ""))
        assert answer.status_code == 422, "without the identity headers the message names no device"
        return
    alone = dry_run(client, kind, sample.invalid)
    assert alone.status_code == 422, alone.text
    answer = dry_run(client, kind, [sample.message, sample.invalid])
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "invalid_payload"
    assert {e["index"] for e in body["errors"]} == {1}
    assert body["message"].startswith("1 of 2 batch items are invalid")


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_forms_and_query_strings_where_the_vendor_sends_them(client: TestClient, kind: str) -> None:
    """A vendor that posts forms or GET query strings gets the same event from them as from JSON."""
    sample, vendor = SAMPLES[kind], VENDORS[kind]
    form = urlencode(sample.message).encode()
    answer = dry_run(client, kind, form, **{"Content-Type": "application/x-www-form-urlencoded"})
    if "application/x-www-form-urlencoded" not in vendor.media_types:
        assert answer.status_code == 415
        return
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"][0]["subject"] == sample.subject
    if "" in vendor.media_types:
        query = client.get(f"/v1/push/{kind}/{sample.event}?{form.decode()}", headers=HEADERS)
        assert query.status_code == 200, query.text


def test_generic_batch_items_meet_the_schema(client: TestClient) -> None:
    """A generic source's array items are checked against its JSON Schema like a single body (was: 200)."""
    answer = dry_run(client, "generic", [{"nope": 1}])
    assert answer.status_code == 422
    assert {(e["index"], e["loc"]) for e in answer.json()["errors"]} >= {(0, "deviceId"), (0, "temp")}


def test_soracom_beam_array_body_is_one_message(client: TestClient) -> None:
    """A Beam device whose JSON body is an array is one message carrying the SIM's identity (was: 422)."""
    answer = dry_run(client, "soracom", [1, 2, 3])
    assert answer.status_code == 200, answer.text
    (event,) = answer.json()["events"]
    assert event["subject"] == IMSI
    assert event["data"]["raw"] == {"soracom": {"imsi": IMSI}, "body": [1, 2, 3]}
