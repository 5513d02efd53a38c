"""The whole path on real parts: signed iotcomms callbacks against the real Kafka broker."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.conftest import (
    BASIC_PASSWORD,
    DOMAIN,
    OTHER_DOMAIN,
    KeyPair,
    SettingsFactory,
    claims,
    hs256_with_public_key,
    message_body,
    unsigned_token,
)
from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker, free_port
from tests.support.ready import ready_client

pytestmark = pytest.mark.kafka

URL = "/v1/callbacks/customer47/message"


@pytest.fixture
def kafka_client(kafka_broker: Broker, make_settings: SettingsFactory, topic_prefix: str) -> Iterator[TestClient]:
    """The app publishing to the session's broker, waited on until it is ready."""
    settings = make_settings(kafka={"bootstrap_servers": kafka_broker.bootstrap_servers, "topic_prefix": topic_prefix})
    with ready_client(create_app(settings)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_signed_callback_becomes_one_record(
    kafka_client: TestClient, kafka_broker: Broker, tenant_key: KeyPair, topic_prefix: str
) -> None:
    """A valid RS256-signed /message callback yields exactly one CloudEvent record, acked before 200."""
    body = message_body(vendorExtra={"kept": True})
    response = kafka_client.post(URL, json=body, headers=bearer(tenant_key.token(claims())))
    assert response.status_code == 200, response.text
    event_id = response.json()["id"]

    records = read_topic(kafka_broker, f"{topic_prefix}.iotcomms.message")
    assert len(records) == 1
    record = records[0]
    assert record.key == DOMAIN.encode()
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/cloudevents+json"
    assert not [name for name in headers if name.startswith("ce_")], "structured mode: no ce_ header"
    event = json.loads(record.value)
    assert event["specversion"] == "1.0"
    assert event["id"] == event_id
    assert event["type"] == "io.iotcomms.message"
    assert event["subject"] == DOMAIN
    assert event["source"] == "urn:iot-receiver:customer47"
    assert event["sourceid"] == "customer47"
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")
    assert event["receivedtime"].endswith("Z")
    assert event["data"] == body  # replyId verbatim, unknown fields kept


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_records_read_back_with_the_cloudevents_sdk(
    kafka_broker: Broker, make_settings: SettingsFactory, tenant_key: KeyPair, topic_prefix: str, mode: str
) -> None:
    """The official SDK's ``from_kafka`` reads the record as the event we built, in either content mode.

    Before, structured records also carried ``ce_*`` headers, which the SDK takes for binary
    mode: it then read the whole envelope as the data.
    """
    kafka = {"bootstrap_servers": kafka_broker.bootstrap_servers, "topic_prefix": topic_prefix, "content_mode": mode}
    body = message_body()
    with ready_client(create_app(make_settings(kafka=kafka))) as client:
        response = client.post(URL, json=body, headers=bearer(tenant_key.token(claims())))
        assert response.status_code == 200, response.text
    (record,) = read_topic(kafka_broker, f"{topic_prefix}.iotcomms.message")
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    event = from_kafka(message, JSONFormat())
    assert event.get_id() == response.json()["id"]
    assert event.get_type() == "io.iotcomms.message"
    assert event.get_source() == "urn:iot-receiver:customer47"
    assert event.get_subject() == DOMAIN
    assert event.get_extension("sourceid") == "customer47"
    assert event.get_data() == body
    if mode == "binary":
        assert dict(record.headers)["content-type"] == b"application/json"
        assert json.loads(record.value) == body


def test_basic_auth_callback_is_published(kafka_client: TestClient, kafka_broker: Broker, topic_prefix: str) -> None:
    """The source's second method, Basic, also gets a callback to Kafka."""
    response = kafka_client.post(
        "/v1/callbacks/customer47/newCall", json={"sessionId": "s-1"}, auth=("iotcomms", BASIC_PASSWORD)
    )
    assert response.status_code == 200, response.text
    records = read_topic(kafka_broker, f"{topic_prefix}.iotcomms.newCall")
    assert [json.loads(r.value)["data"] for r in records] == [{"sessionId": "s-1"}]


def test_vendor_retry_gets_the_same_id(kafka_client: TestClient, tenant_key: KeyPair) -> None:
    """The same delivery posted twice (even with a fresh token) carries the same event id."""
    first = kafka_client.post(URL, json=message_body(), headers=bearer(tenant_key.token(claims())))
    second = kafka_client.post(URL, json=message_body(), headers=bearer(tenant_key.token(claims(iat_offset=-5))))
    other = kafka_client.post(URL, json=message_body(body="x"), headers=bearer(tenant_key.token(claims())))
    assert first.status_code == second.status_code == other.status_code == 200
    assert first.json()["id"] == second.json()["id"] != other.json()["id"]


Request = Callable[[KeyPair, KeyPair], dict[str, Any]]


def _post(**kwargs: Any) -> Request:
    """A request description built from the tenant's and another tenant's keys."""

    def build(tenant: KeyPair, other: KeyPair) -> dict[str, Any]:
        del tenant, other
        return {"url": URL, "json": message_body(), **kwargs}

    return build


def _token(make: Callable[[KeyPair, KeyPair], str], **kwargs: Any) -> Request:
    def build(tenant: KeyPair, other: KeyPair) -> dict[str, Any]:
        return {"url": URL, "json": message_body(), "headers": bearer(make(tenant, other)), **kwargs}

    return build


def _tampered(tenant: KeyPair) -> str:
    """A valid token whose claims were swapped after signing (a later ``exp``)."""
    header, _, signature = tenant.token(claims()).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(ttl=5000)).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def _valid(tenant: KeyPair, other: KeyPair) -> str:
    del other
    return tenant.token(claims())


INVALID = [
    pytest.param(_post(), 401, "auth_required", id="no-credentials"),
    pytest.param(_post(headers={"Authorization": "Digest abc"}), 401, "auth_required", id="unknown-scheme"),
    pytest.param(_post(headers={"Authorization": "Bearer not.a.jwt"}), 401, "invalid_token", id="malformed"),
    pytest.param(_token(lambda t, o: o.token(claims())), 401, "invalid_token", id="bad-signature-other-key"),
    pytest.param(_token(lambda t, o: _tampered(t)), 401, "invalid_token", id="tampered-claims"),
    pytest.param(_token(lambda t, o: unsigned_token(claims())), 401, "invalid_token", id="alg-none"),
    pytest.param(
        _token(lambda t, o: hs256_with_public_key(t, claims())),
        401,
        "invalid_token",
        id="hs256-with-public-key",
    ),
    pytest.param(_token(lambda t, o: t.token(claims(iat_offset=-600, ttl=300))), 401, "token_expired", id="expired"),
    pytest.param(
        _token(lambda t, o: t.token(claims(iat_offset=-3700, ttl=None))),
        401,
        "token_too_old",
        id="iat-too-old",
    ),
    pytest.param(_token(lambda t, o: t.token(claims(iat_offset=600))), 401, "token_not_yet_valid", id="iat-in-future"),
    pytest.param(
        _token(lambda t, o: t.token(claims(ttl=5401))),
        401,
        "token_lifetime_exceeded",
        id="lifetime-over-90-min",
    ),
    pytest.param(_token(lambda t, o: t.token(claims(sub=OTHER_DOMAIN))), 401, "subject_mismatch", id="wrong-sub"),
    pytest.param(_token(lambda t, o: t.token({"sub": DOMAIN})), 401, "invalid_token", id="no-iat"),
    pytest.param(
        _token(lambda t, o: o.token(claims(sub=OTHER_DOMAIN))), 401, "invalid_token", id="other-tenants-token"
    ),
    pytest.param(_post(auth=("iotcomms", "wrong-password")), 401, "invalid_credentials", id="basic-wrong-password"),
    pytest.param(_post(auth=("someone", BASIC_PASSWORD)), 401, "invalid_credentials", id="basic-wrong-user"),
    pytest.param(_token(lambda t, o: "wrong", auth=None), 401, "invalid_token", id="wrong-bearer-no-fallthrough"),
    pytest.param(
        _token(_valid, json=None, content=b'{"from": ', headers_extra={"Content-Type": "application/json"}),
        422,
        "invalid_payload",
        id="malformed-json",
    ),
    pytest.param(_token(_valid, json=message_body(to=5, replyId=None)), 422, "invalid_payload", id="invalid-fields"),
    pytest.param(
        _token(_valid, json=None, content=b"from=a", headers_extra={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
        id="wrong-content-type",
    ),
    pytest.param(_token(_valid, json=message_body(body="x" * 5000)), 413, "payload_too_large", id="body-over-limit"),
    pytest.param(_token(_valid, url="/v1/callbacks/nosuchsource/message"), 404, "unknown_source", id="unknown-source"),
    pytest.param(
        _token(_valid, url="/v1/callbacks/customer47/noSuchCallback"),
        404,
        "unknown_event",
        id="unknown-event",
    ),
    pytest.param(
        _token(_valid, url="/v1/callbacks/customer48/message"),
        401,
        "invalid_token",
        id="key-of-another-source",
    ),
]


@pytest.mark.parametrize(("build", "status", "code"), INVALID)
def test_invalid_request_is_refused_and_not_published(
    kafka_client: TestClient,
    kafka_broker: Broker,
    tenant_key: KeyPair,
    other_key: KeyPair,
    topic_prefix: str,
    build: Request,
    status: int,
    code: str,
) -> None:
    """Each invalid case gets its status and stable code, a JSON error body, and no event record."""
    request = build(tenant_key, other_key)
    headers = {**request.pop("headers", {}), **request.pop("headers_extra", {})}
    url = request.pop("url")
    response = kafka_client.post(url, headers=headers, **{k: v for k, v in request.items() if v is not None})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    if status == 401:
        assert "WWW-Authenticate" in response.headers
    for topic in ("message", "newCall"):
        assert read_topic(kafka_broker, f"{topic_prefix}.iotcomms.{topic}") == []
    letters = read_topic(kafka_broker, f"{topic_prefix}.deadletter")
    if status in (415, 422) or code == "unknown_event":
        # Authenticated but refused: kept for replay, with the reason.
        assert [json.loads(r.value)["code"] for r in letters] == [code]
    else:
        assert letters == []


def test_dead_letter_keeps_raw_body_and_field_errors(
    kafka_client: TestClient, kafka_broker: Broker, tenant_key: KeyPair, topic_prefix: str
) -> None:
    """An invalid payload is dead-lettered with its raw body, field paths and no credentials."""
    token = tenant_key.token(claims())
    response = kafka_client.post(URL, json={"from": "sip:a@b", "to": 7}, headers=bearer(token))
    assert response.status_code == 422
    assert {e["loc"] for e in response.json()["errors"]} == {"to", "contentType", "body", "replyId"}
    (record,) = read_topic(kafka_broker, f"{topic_prefix}.deadletter")
    letter = json.loads(record.value)
    assert letter["source_id"] == "customer47"
    assert letter["event"] == "message"
    assert json.loads(letter["body"]) == {"from": "sip:a@b", "to": 7}
    assert token not in record.value.decode()
    assert {e["loc"] for e in letter["errors"]} == {"to", "contentType", "body", "replyId"}


def test_stopped_broker_gives_503_and_acknowledges_nothing_unwritten(
    make_settings: SettingsFactory, tenant_key: KeyPair, topic_prefix: str
) -> None:
    """With the broker gone, callbacks get 503 kafka_unavailable; every 200 was written."""
    broker = Broker().start()
    try:
        settings = make_settings(
            kafka={
                "bootstrap_servers": broker.bootstrap_servers,
                "topic_prefix": topic_prefix,
                "publish_timeout_seconds": 3,
                "request_timeout_ms": 2000,
                "shutdown_timeout_seconds": 3,
            }
        )
        with ready_client(create_app(settings)) as client:
            accepted = []
            for n in range(3):
                response = client.post(URL, json=message_body(body=f"m{n}"), headers=bearer(tenant_key.token(claims())))
                assert response.status_code == 200, response.text
                accepted.append(response.json()["id"])
            written = {json.loads(r.value)["id"] for r in read_topic(broker, f"{topic_prefix}.iotcomms.message")}
            assert set(accepted) <= written

            broker.stop()
            response = client.post(URL, json=message_body(body="late"), headers=bearer(tenant_key.token(claims())))
            assert response.status_code == 503
            assert response.json()["code"] == "kafka_unavailable"
            assert int(response.headers["Retry-After"]) > 0
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["kafka"] != "ok"
    finally:
        broker.cleanup()


def test_unreachable_broker_is_not_ready(make_settings: SettingsFactory, tenant_key: KeyPair) -> None:
    """A receiver whose broker never answers stays not-ready and answers 503, never 200."""
    settings = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["code"] == "not_ready"
        assert "kafka" in ready.json()["message"]
        response = client.post(URL, json=message_body(), headers=bearer(tenant_key.token(claims())))
        assert response.status_code == 503
        assert response.json()["code"] == "kafka_unavailable"
