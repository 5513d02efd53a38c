"""The real broker for tests: one per session, a topic prefix per test, and reading a topic back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.support.kafka_broker import Broker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """One real Kafka broker (KRaft) for the session; a broker that cannot start fails the tests."""
    broker = Broker().start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so each test sees only its own topics."""
    return f"t{uuid.uuid4().hex[:12]}"


async def _read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        if topic not in cluster.topics():
            return []
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                msg = f"could not read {topic} up to its end offsets"
                raise AssertionError(msg)
            for batch in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def read_topic(broker: Broker, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` up to its current end offsets (none if it does not exist)."""
    return asyncio.run(_read_topic(broker.bootstrap_servers, topic))
