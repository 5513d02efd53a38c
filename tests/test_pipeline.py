"""The pipeline without a broker: deliveries through a ``MemoryPublisher``, which keeps what was published."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from receiver.admission import Admission
from receiver.errors import KafkaUnavailableError, RateLimitedError, ReplayedRequestError
from receiver.events import Delivery, Record
from receiver.pipeline import Pipeline
from receiver.publish import Publisher
from receiver.sources import build_sources
from receiver.state import MemoryState
from tests.conftest import BASIC_PASSWORD, DOMAIN, KeyPair, SettingsFactory, claims, message_body
from tests.support.publisher import MemoryPublisher


def pipeline_on(publisher: Publisher, make_settings: SettingsFactory) -> Pipeline:
    sources = build_sources(make_settings())
    state = MemoryState()
    return Pipeline(sources, publisher, "iot", Admission(state, 60), state)


def basic_delivery(body: bytes) -> Delivery:
    """A Basic-authenticated iotcomms /message callback for customer47."""
    credentials = base64.b64encode(f"iotcomms:{BASIC_PASSWORD}".encode())
    return Delivery(
        source_id="customer47",
        event="message",
        body=body,
        content_type="application/json",
        headers={b"authorization": b"Basic " + credentials, b"content-type": b"application/json"},
        client_ip="192.0.2.10",
        received_at=time.time(),
    )


def test_memory_publisher_keeps_records_and_refuses_on_demand() -> None:
    """Records are kept in order; after fail() a publish raises and keeps nothing, check() says why, until recover()."""
    publisher = MemoryPublisher()
    first, second = Record("a", b"k", b"1"), Record("b", b"k", b"2")
    asyncio.run(publisher.publish([first, second]))
    assert publisher.records == [first, second]
    assert publisher.on("b") == [second]
    assert asyncio.run(publisher.check()) is None

    publisher.fail("broker gone")
    with pytest.raises(KafkaUnavailableError, match="broker gone"):
        asyncio.run(publisher.publish([Record("a", b"k", b"3")]))
    assert publisher.records == [first, second]
    assert asyncio.run(publisher.check()) == "broker gone"

    publisher.recover()
    asyncio.run(publisher.publish([Record("a", b"k", b"3")]))
    assert [r.value for r in publisher.on("a")] == [b"1", b"3"]


def test_accepted_delivery_is_published_once(make_settings: SettingsFactory) -> None:
    """An accepted callback is one CloudEvent record on its default topic, keyed by the customer domain."""
    publisher = MemoryPublisher()
    pipeline = pipeline_on(publisher, make_settings)
    accepted = asyncio.run(pipeline.process(basic_delivery(json.dumps(message_body()).encode())))
    (record,) = publisher.records
    assert record.topic == "iot.iotcomms.message"
    assert accepted.topics == ["iot.iotcomms.message"]
    event = json.loads(record.value)
    assert event["id"] == accepted.event_id
    assert event["data"]["body"] == message_body()["body"]
    assert record.key == event["subject"].encode()


def test_unavailable_publisher_refuses_the_delivery(make_settings: SettingsFactory) -> None:
    """When the publisher cannot make the event durable, the delivery is refused with kafka_unavailable."""
    publisher = MemoryPublisher()
    publisher.fail()
    pipeline = pipeline_on(publisher, make_settings)
    with pytest.raises(KafkaUnavailableError) as refused:
        asyncio.run(pipeline.process(basic_delivery(json.dumps(message_body()).encode())))
    assert refused.value.status == 503
    assert refused.value.code == "kafka_unavailable"
    assert publisher.records == []


def test_a_replayed_id_counts_as_a_failed_authentication(make_settings: SettingsFactory, tenant_key: KeyPair) -> None:
    """A single-use id reused for another body is refused, and spends the address's failure allowance."""
    auth = {"type": "jwt", "public_keys": [str(tenant_key.public_path)], "reject_replayed_jti": True}
    sources = build_sources(
        make_settings(sources={"customer47": {"kind": "iotcomms", "domain": DOMAIN, "auth": [auth]}})
    )
    state = MemoryState()
    publisher = MemoryPublisher()
    pipeline = Pipeline(sources, publisher, "iot", Admission(state, 1), state)

    def delivery(jti: str, note: str) -> Delivery:
        token = tenant_key.token(claims(jti=jti))
        return Delivery(
            source_id="customer47",
            event="message",
            body=json.dumps(message_body(body=note)).encode(),
            content_type="application/json",
            headers={b"authorization": f"Bearer {token}".encode(), b"content-type": b"application/json"},
            client_ip="192.0.2.10",
            received_at=time.time(),
        )

    async def scenario() -> None:
        await pipeline.process(delivery("once-1", "first"))
        with pytest.raises(ReplayedRequestError):
            await pipeline.process(delivery("once-1", "another body"))
        with pytest.raises(RateLimitedError):
            await pipeline.process(delivery("once-2", "a fresh token from the same address"))

    asyncio.run(scenario())
    assert len(publisher.records) == 1
