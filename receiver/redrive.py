"""Dead-letter re-drive (``receiver deadletter replay``): dead letters back through the pipeline.

Once the cause of a refusal is fixed, reads ``<topic_prefix>.deadletter`` (Kafka, or the
embedded store), keeps the letters matching ``--since`` and ``--source``, and
re-submits each through the same pipeline the app serves with (``build_pipeline``:
authorization, intake, normalization, routing, dedup, metrics), with the current config. The event ids are the
ones the deliveries had at first, so a replay of something that went through after all
is deduplicated downstream like a vendor retry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from receiver.deadletter import deadletter_topic, letter_delivery, letter_principal
from receiver.errors import RequestError
from receiver.metrics import Metrics
from receiver.pipeline import Pipeline, build_pipeline
from receiver.publish import open_publisher
from receiver.settings import Settings
from receiver.sources import build_sources
from receiver.state import build_state


@dataclass
class RedriveReport:
    replayed: list[str] = field(default_factory=list)
    still_refused: list[tuple[str, str]] = field(default_factory=list)  # (letter id, code)
    skipped: int = 0


async def _letters(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    topic = deadletter_topic(settings.kafka.topic_prefix)
    if settings.kafka.bootstrap_servers is None:
        from receiver.publish.store import connect, read_events  # noqa: PLC0415

        if not settings.store.path.exists():
            return
        conn = await asyncio.to_thread(connect, settings.store.path, readonly=True)
        try:
            for stored in await asyncio.to_thread(lambda: list(read_events(conn, 0, topic))):
                yield json.loads(stored.value)
        finally:
            conn.close()
        return
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        # A consumer without a group knows only the topics it is assigned, so ask the cluster.
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - aiokafka has no public call for this
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(*partitions, timeout_ms=1000)).values():
                for message in batch:
                    yield json.loads(message.value)
    finally:
        await consumer.stop()


async def redrive(settings: Settings, *, since: datetime | None = None, source: str | None = None) -> RedriveReport:
    report = RedriveReport()
    sources = build_sources(settings)
    metrics = Metrics({s.id: s.vendor.events for s in sources.values()})
    state = build_state(settings.state, lease_seconds=settings.kafka.publish_timeout_seconds + 5)
    await state.start()
    try:
        async with open_publisher(settings) as publisher:
            pipeline = build_pipeline(settings, sources, publisher, metrics, state=state)
            await _redrive_letters(settings, pipeline, report, since=since, source=source)
    finally:
        await state.close()
    return report


async def _redrive_letters(
    settings: Settings, pipeline: Pipeline, report: RedriveReport, *, since: datetime | None, source: str | None
) -> None:
    async for letter in _letters(settings):
        delivery = letter_delivery(letter)
        if (source and delivery.source_id != source) or (since and delivery.received_at < since.timestamp()):
            report.skipped += 1
            continue
        try:
            await pipeline.redrive(delivery, letter_principal(letter))
        except RequestError as exc:
            report.still_refused.append((letter["id"], exc.code))
            continue
        report.replayed.append(letter["id"])
