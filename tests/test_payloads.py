"""Every platform's payloads through the running app into the real broker: envelopes, routes, dead letters."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.cli import main
from receiver.settings import Settings, build_settings
from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker
from tests.support.ready import ready_client, wait_ready

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "payload-suite-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = "dry-run-admin-token"


def bearer_source(kind: str, **extra: Any) -> dict[str, Any]:
    auth = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    return {"kind": kind, "auth": auth, **extra}


def settings_for(broker: Broker, prefix: str, schema: Path, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "topic_prefix": prefix, "topics": {"check": False}},
        "audit": {"enabled": False},
        "dry_run": {"enabled": True, "token_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()},
        "routes": [
            {
                "match": {"source": "trk", "group": "alarms"},
                "topics": [f"{prefix}.alarms", f"{prefix}.all"],
                "key": "source",
                "headers": {"x-route": "alarms"},
            }
        ],
        "sources": {
            "sfx": bearer_source("sigfox", options={"downlinks": {"1A2B3C": "0102030405060708"}}),
            "sora": bearer_source("soracom"),
            "trk": bearer_source("tracker", dedup_window_seconds=60),
            "gen": bearer_source("generic", generic={"schema_file": str(schema), "device_id_pointer": "/meter/serial"}),
            "lenient": bearer_source("tracker", on_invalid="accept", webhook_origins=["eventgrid.azure.net"]),
        },
        **overrides,
    }
    return build_settings(data, environ=False)


class World:
    def __init__(self, client: TestClient, broker: Broker, prefix: str, schema: Path) -> None:
        self.client, self.broker, self.prefix, self.schema = client, broker, prefix, schema

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [
            {"value": json.loads(r.value), "key": r.key, "headers": dict(r.headers)}
            for r in read_topic(self.broker, f"{self.prefix}.{topic}")
        ]


@pytest.fixture(scope="module")
def world(kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("payloads")
    schema = directory / "schema.json"
    schema.write_text((FIXTURES / "generic" / "schema.json").read_text())
    prefix = f"p{uuid.uuid4().hex[:10]}"
    with ready_client(create_app(settings_for(kafka_broker, prefix, schema))) as client:
        yield World(client, kafka_broker, prefix, schema)


def fixture(*parts: str) -> bytes:
    return (FIXTURES.joinpath(*parts)).read_bytes()


def test_sigfox_json_form_and_query_become_one_vocabulary(world: World) -> None:
    """A Sigfox uplink as JSON, form fields or a GET query string: typed facts in °C/dBm/UTC, raw body kept."""
    json_answer = world.client.post("/v1/push/sfx/uplink", content=fixture("sigfox", "uplink.json"),
                                    headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    form_answer = world.client.post("/v1/push/sfx/uplink", content=fixture("sigfox", "uplink.form"),
                                    headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    query = fixture("sigfox", "uplink.query").decode().strip()
    query_answer = world.client.get(f"/v1/push/sfx/uplink?{query}", headers=AUTH)
    assert [a.status_code for a in (json_answer, form_answer, query_answer)] == [200, 200, 200]
    events = {r["value"]["id"]: r for r in world.records("sigfox.uplink")}
    first = events[json_answer.json()["id"]]
    data = first["value"]["data"]
    assert first["key"] == b"1A2B3C"
    assert first["value"]["type"] == "com.sigfox.uplink"
    assert first["value"]["time"] == "2023-11-14T22:13:20.000Z"  # epoch seconds → RFC 3339 UTC
    assert data["device_id"] == "1A2B3C"
    assert data["sequence"] == 123
    assert data["rssi_dbm"] == -121.5
    assert data["raw"]["data"] == "0a1b2c3d4e5f"
    assert events[form_answer.json()["id"]]["value"]["data"]["sequence"] == 125  # strings coerced
    assert events[query_answer.json()["id"]]["value"]["data"]["sequence"] == 126


def test_sigfox_bidir_gets_its_downlink(world: World) -> None:
    """A bidir callback with ack gets the configured downlink synchronously, after the event is on Kafka."""
    answer = world.client.post("/v1/push/sfx/bidir", content=fixture("sigfox", "bidir.json"),
                               headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200
    assert answer.json() == {"1A2B3C": {"downlinkData": "0102030405060708"}}
    assert answer.headers["X-Event-ID"] in {r["value"]["id"] for r in world.records("sigfox.bidir")}


@pytest.mark.parametrize(
    ("event", "name", "subject"),
    [
        pytest.param("beam", "beam.json", "440101234567890", id="beam"),
        pytest.param("udp", "udp.json", "440101234567890", id="udp"),
        pytest.param("funnel", "funnel.json", None, id="funnel"),
    ],
)
def test_soracom_payloads(world: World, event: str, name: str, subject: str | None) -> None:
    """Soracom bodies come out keyed by the SIM's identity, with their facts in the vocabulary."""
    headers = {**AUTH, "Content-Type": "application/json", "X-Soracom-Imsi": "440101234567890"}
    answer = world.client.post(f"/v1/push/sora/{event}", content=fixture("soracom", name), headers=headers)
    assert answer.status_code == 200, answer.text
    (record,) = [r for r in world.records(f"soracom.{event}") if r["value"]["id"] == answer.json()["id"]]
    assert record["value"]["type"] == f"io.soracom.{event}"
    if subject is not None:
        assert record["value"]["subject"] == subject
    assert record["value"]["time"].endswith("Z")


def test_generic_schema_and_pointers(world: World) -> None:
    """A generic source validates against its JSON Schema file; the device id comes from its pointer."""
    answer = world.client.post("/v1/push/gen/message", content=fixture("generic", "message.json"),
                               headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    (record,) = [r for r in world.records("generic.message") if r["value"]["id"] == answer.json()["id"]]
    assert record["value"]["subject"] == "EM0042"
    refused = world.client.post("/v1/push/gen/message", content=fixture("generic", "invalid-message.json"),
                                headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert refused.status_code == 422
    assert refused.json()["errors"]
    letters = [r["value"] for r in world.records("deadletter") if r["value"]["source_id"] == "gen"]
    assert letters
    assert letters[-1]["code"] == "invalid_payload"
    assert "authorization" not in letters[-1]["headers"]


def test_routing_rule_sends_to_its_topics(world: World) -> None:
    """A rule on source and group sends to both its topics, keyed and headed as it says; others go by default."""
    body = {"deviceId": "dev-9", "group": "alarms", "temperature": 70.5}
    answer = world.client.post("/v1/push/trk", json=body, headers=AUTH)
    assert answer.status_code == 200
    for topic in ("alarms", "all"):
        (record,) = [r for r in world.records(topic) if r["value"]["id"] == answer.json()["id"]]
        assert record["key"] == b"trk"
        assert record["headers"]["x-route"] == b"alarms"
        assert record["value"]["data"]["temperature_c"] == 70.5
    assert answer.json()["id"] not in {r["value"]["id"] for r in world.records("tracker.push")}
    other = world.client.post("/v1/push/trk", json={**body, "group": "fleet"}, headers=AUTH)
    assert other.json()["id"] in {r["value"]["id"] for r in world.records("tracker.push")}


def test_batch_is_all_or_nothing(world: World) -> None:
    """A JSON array publishes every item with its own id, or, with one bad item, none and a 422 by index."""
    items = [{"deviceId": f"b{n}", "group": "fleet", "battery": 50 + n} for n in range(3)]
    answer = world.client.post("/v1/push/trk", json=items, headers=AUTH)
    assert answer.status_code == 200
    ids = answer.json()["ids"]
    assert len(set(ids)) == 3
    assert set(ids) <= {r["value"]["id"] for r in world.records("tracker.push")}
    bad = [
        {"deviceId": "b0z", "group": "fleet"},
        {"group": "fleet"},
        {"deviceId": "x", "group": "fleet", "battery": 500},
    ]
    refused = world.client.post("/v1/push/trk", json=bad, headers=AUTH)
    assert refused.status_code == 422
    assert sorted({e["index"] for e in refused.json()["errors"]}) == [1, 2]
    published = {r["value"]["data"]["device_id"] for r in world.records("tracker.push")}
    assert "b0z" not in published


def test_vendor_retry_is_not_published_twice(world: World) -> None:
    """Within the dedup window the same delivery is answered with its id and published once."""
    body = {"deviceId": f"dedup-{uuid.uuid4().hex[:6]}", "group": "fleet"}
    first = world.client.post("/v1/push/trk", json=body, headers=AUTH)
    again = world.client.post("/v1/push/trk", json=body, headers=AUTH)
    assert first.json()["id"] == again.json()["id"]
    matching = [r for r in world.records("tracker.push") if r["value"]["id"] == first.json()["id"]]
    assert len(matching) == 1


def test_sequence_gaps_repeats_and_resets_are_marked(world: World) -> None:
    """Frame counters 100, 101, 104, 104, 2 are marked first, ok, gap (2 missed), repeat, reset."""
    device = f"seq-{uuid.uuid4().hex[:6]}"
    ids = []
    for n, counter in enumerate([100, 101, 104, 104, 2]):
        body = {"deviceId": device, "group": "fleet", "frameCounter": counter, "n": n}
        ids.append(world.client.post("/v1/push/trk", json=body, headers=AUTH).json()["id"])
    by_id = {r["value"]["id"]: r["value"] for r in world.records("tracker.push")}
    marks = [(by_id[i]["seqstatus"], by_id[i].get("seqmissed")) for i in ids]
    assert marks == [("first", None), ("ok", None), ("gap", "2"), ("repeat", None), ("reset", None)]
    metrics = world.client.get("/metrics").text
    assert 'receiver_sequence_anomalies_total{source="trk",status="gap"}' in metrics


def test_dry_run_shows_the_event_and_publishes_nothing(world: World) -> None:
    """The dry run needs its admin token and the vendor's credentials, and answers with what would be sent."""
    assert "/v1/dry-run/{source}/{event}" in world.client.get("/openapi.json").json()["paths"]
    body = {"deviceId": f"dry-{uuid.uuid4().hex[:6]}", "group": "alarms"}
    denied = world.client.post("/v1/dry-run/trk/push", json=body, headers=AUTH)
    assert denied.status_code == 401
    report = world.client.post("/v1/dry-run/trk/push", json=body, headers={**AUTH, "X-Dry-Run-Token": ADMIN})
    assert report.status_code == 200, report.text
    (event,) = report.json()["events"]
    assert event["subject"] == body["deviceId"]
    assert report.json()["topics"] == [f"{world.prefix}.alarms", f"{world.prefix}.all"]
    published = {r["value"]["subject"] for t in ("alarms", "all", "tracker.push") for r in world.records(t)}
    assert body["deviceId"] not in published


def test_lenient_source_accepts_invalid_payloads_to_the_dead_letters(world: World) -> None:
    """With on_invalid: accept, an invalid payload gets 202 and lands only on the dead-letter topic."""
    marker = uuid.uuid4().hex
    answer = world.client.post("/v1/push/lenient", json={"group": "g", "note": marker}, headers=AUTH)
    assert answer.status_code == 202
    assert answer.json()["code"] == "invalid_payload"
    assert any(marker in json.dumps(r["value"]) for r in world.records("deadletter"))
    assert not any(marker in json.dumps(r["value"]) for r in world.records("tracker.push"))


def test_webhook_validation_handshake(world: World) -> None:
    """OPTIONS with WebHook-Request-Origin is allowed for the origins a source lists, beside Allow."""
    allowed = world.client.options("/v1/push/lenient", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert allowed.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert allowed.headers["WebHook-Allowed-Rate"] == "*"
    assert "POST" in allowed.headers["Allow"]
    other = world.client.options("/v1/push/lenient", headers={"WebHook-Request-Origin": "evil.example"})
    assert "WebHook-Allowed-Origin" not in other.headers


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        pytest.param(b"[" * 40 + b"]" * 40, "application/json", 422, "invalid_payload", id="deep-nesting"),
        pytest.param(
            b'{"deviceId": "d", "group": "g", "n": ' + b"9" * 200 + b"}",
            "application/json",
            422,
            "invalid_payload",
            id="huge-number",
        ),
        pytest.param(b"<xml/>", "application/xml", 415, "unsupported_media_type", id="xml"),
        pytest.param(b"{}", "application/json; charset=klingon", 415, "unsupported_media_type", id="unknown-charset"),
    ],
)
def test_content_guards(world: World, body: bytes, content_type: str, status: int, code: str) -> None:
    """Bodies that could hurt the parser, and media types no vendor posts, are refused with their code."""
    answer = world.client.post("/v1/push/trk", content=body, headers={**AUTH, "Content-Type": content_type})
    assert answer.status_code == status
    assert answer.json()["code"] == code


def test_latin1_charset_is_honoured(world: World) -> None:
    """A body declared as latin-1 is decoded as latin-1."""
    body = '{"deviceId": "café-1", "group": "fleet"}'.encode("latin-1")
    answer = world.client.post("/v1/push/trk", content=body,
                               headers={**AUTH, "Content-Type": "application/json; charset=latin-1"})  # fmt: skip
    assert answer.status_code == 200
    assert "café-1" in {r["value"]["subject"] for r in world.records("tracker.push")}


def test_replay_brings_dead_letters_back_once_fixed(world: World, tmp_path: Path) -> None:
    """A reading refused by a too-strict schema is replayed into the topic once the schema is fixed."""
    strict = json.loads(world.schema.read_text())
    strict["properties"]["values"]["items"]["properties"]["value"]["maximum"] = 10
    strict_file = tmp_path / "strict.json"
    strict_file.write_text(json.dumps(strict))
    settings = settings_for(world.broker, world.prefix, strict_file)
    marker = uuid.uuid4().hex[:8].upper()
    reading = json.loads(fixture("generic", "message.json"))
    reading["meter"]["serial"] = f"R{marker}"
    with ready_client(create_app(settings)) as client:
        refused = client.post("/v1/push/gen/message", json=reading, headers=AUTH)
        assert refused.status_code == 422
    config = tmp_path / "fixed.yaml"
    fixed = settings.model_dump(mode="json", exclude_unset=True)
    fixed["sources"]["gen"]["generic"]["schema_file"] = str(world.schema)
    config.write_text(json.dumps(fixed))
    assert main(["deadletter", "replay", "--config", str(config), "--source", "gen"]) in (0, 1)
    subjects = [r["value"]["subject"] for r in world.records("generic.message")]
    assert subjects.count(f"R{marker}") == 1


def test_routes_tester(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``receiver routes test`` prints the rule and topics an event would get."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings_for(world.broker, world.prefix, world.schema).model_dump(mode="json")))
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"sourceid": "trk", "type": "com.tracker.push", "subject": "d", "data": {"group": "alarms"}})
    )
    assert main(["routes", "test", str(config), str(event)]) == 0
    routed = json.loads(capsys.readouterr().out)
    assert routed == {"rule": 0, "topics": [f"{world.prefix}.alarms", f"{world.prefix}.all"], "key": "trk",
                      "headers": {"x-route": "alarms"}}  # fmt: skip
    event.write_text(
        json.dumps({"sourceid": "trk", "type": "com.tracker.push", "subject": "d", "data": {"group": "x"}})
    )
    assert main(["routes", "test", str(config), str(event)]) == 0
    assert json.loads(capsys.readouterr().out)["topics"] == [f"{world.prefix}.tracker.push"]


def test_missing_topics_fail_readiness_until_created(kafka_broker: Broker, tmp_path: Path) -> None:
    """Readiness names the missing target topics; with create: true the receiver makes them and is ready."""
    prefix = f"c{uuid.uuid4().hex[:10]}"
    base = settings_for(kafka_broker, prefix, FIXTURES / "generic" / "schema.json")
    data = base.model_dump(mode="json", exclude_unset=True)
    data["kafka"]["topics"] = {"check": True}
    data["sources"] = {"trk": data["sources"]["trk"]}
    data["routes"] = []
    with TestClient(create_app(build_settings(data, environ=False))) as client:
        wait_ready(client, until=lambda answer: "missing topics" in answer.text, timeout=30)
        assert f"{prefix}.tracker.push" in client.get("/readyz").json()["message"]
    data["kafka"]["topics"] = {"check": True, "create": True, "partitions": 2}
    with TestClient(create_app(build_settings(data, environ=False))) as client:
        wait_ready(client)  # the receiver created the topics: 200


def test_schemas_do_not_drift(capsys: pytest.CaptureFixture[str]) -> None:
    """The checked-in schemas/ match the models (run `receiver schemas export` after changing one)."""
    assert main(["schemas", "export", "--check", "--out", str(Path(__file__).parent.parent / "schemas")]) == 0, (
        capsys.readouterr().err
    )


def test_published_envelopes_match_the_exported_schemas(world: World) -> None:
    """Every event this suite published validates against its checked-in schemas/events/<type>.json."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    schemas = Path(__file__).parent.parent / "schemas" / "events"
    checked = 0
    for topic in ("sigfox.uplink", "sigfox.bidir", "soracom.beam", "generic.message", "tracker.push", "alarms"):
        for record in world.records(topic):
            event = record["value"]
            validator = Draft202012Validator(json.loads((schemas / f"{event['type']}.json").read_text()))
            errors = [e.message for e in validator.iter_errors(event)]
            assert not errors, (event["type"], errors)
            checked += 1
    assert checked >= 10


def test_static_answer_for_an_iotcomms_callback(kafka_broker: Broker, tmp_path: Path) -> None:
    """A configured answer for /newCall is returned as the response body, after the event is published."""
    prefix = f"s{uuid.uuid4().hex[:10]}"
    answer = {"action": "connect", "destination": "sip:desk@customer47.prod-eu-north-1.iotcomms.io"}
    source = bearer_source("iotcomms", domain="customer47.prod-eu-north-1.iotcomms.io", answers={"newCall": answer})
    settings = build_settings(
        {
            "kafka": {
                "bootstrap_servers": kafka_broker.bootstrap_servers,
                "topic_prefix": prefix,
                "topics": {"check": False},
            },
            "audit": {"enabled": False},
            "sources": {"c47": source},
        },
        environ=False,
    )
    with ready_client(create_app(settings)) as client:
        response = client.post("/v1/callbacks/c47/newCall", json={"sessionId": "s-9", "callId": "c-1"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == answer
    (record,) = read_topic(kafka_broker, f"{prefix}.iotcomms.newCall")
    assert json.loads(record.value)["id"] == response.headers["X-Event-ID"]
