"""The Kafka publisher: an idempotent aiokafka producer with ``acks=all``.

The producer connects in the background, so the process starts (and answers
``/healthz``) while Kafka is still coming up; until it is connected ``/readyz`` is 503
and publishing raises ``KafkaUnavailableError``. Each publish waits for the broker's
acknowledgement, bounded by ``publish_timeout_seconds``; concurrent requests share
batches, which is what keeps an awaited ack cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from receiver.errors import ConfigError, KafkaUnavailableError
from receiver.events import Record
from receiver.publish.partitioner import partition_for
from receiver.settings import KafkaSettings

log = logging.getLogger("receiver.publish")

_READY_CACHE_SECONDS = 1.0
_PROBE_TIMEOUT_SECONDS = 2.0


class KafkaPublisher:
    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._last_error = "connecting"
        self._connector: asyncio.Task[None] | None = None
        self._probe: tuple[float, str | None] = (0.0, "connecting")

    def _new_producer(self) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_size,
            request_timeout_ms=s.request_timeout_ms,
            compression_type=s.compression_type,
            partitioner=partition_for,
        )

    async def __aenter__(self) -> Self:
        # Building the producer validates its options: a bad one fails startup here.
        try:
            first = self._new_producer()
        except (ValueError, TypeError, AssertionError, RuntimeError, KafkaError) as exc:
            raise ConfigError([f"kafka: the producer refused its options: {exc}"]) from exc
        self._connector = asyncio.create_task(self._connect(first), name="kafka-connect")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            # stop() flushes what is still buffered; a dead broker must not hold shutdown forever.
            try:
                async with asyncio.timeout(self._settings.shutdown_timeout_seconds):
                    await self._producer.stop()
            except TimeoutError:
                log.exception(
                    "receiver.kafka_flush_timeout", extra={"seconds": self._settings.shutdown_timeout_seconds}
                )

    async def _connect(self, producer: AIOKafkaProducer) -> None:
        """Start the producer, retrying with capped exponential backoff until it connects."""
        delay = 0.5
        while True:
            try:
                await producer.start()
            except KafkaError as exc:
                self._last_error = f"cannot reach {self._settings.bootstrap_servers}: {type(exc).__name__}"
                log.warning(
                    "receiver.kafka_connect_retry", extra={"retry_in_seconds": round(delay, 1), "error": str(exc)}
                )
            except asyncio.CancelledError:
                await producer.stop()  # shutdown before Kafka ever answered
                raise
            else:
                self._producer = producer
                log.info("receiver.kafka_connected", extra={"bootstrap_servers": self._settings.bootstrap_servers})
                return
            await producer.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            producer = self._new_producer()

    async def publish(self, records: Sequence[Record]) -> None:
        producer = self._producer
        if producer is None:
            msg = "the receiver is not connected to Kafka yet; retry shortly"
            raise KafkaUnavailableError(msg)
        timeout = self._settings.publish_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                acks = [await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)) for r in records]
                for ack in acks:  # each resolves when its batch is acknowledged
                    await ack
        except TimeoutError as exc:
            msg = f"Kafka did not acknowledge the event within {timeout:g} s; it was not accepted, retry later"
            log.warning("receiver.kafka_publish_timeout", extra={"seconds": timeout})
            raise KafkaUnavailableError(msg) from exc
        except KafkaError as exc:
            msg = "Kafka refused or lost the event; it was not accepted, retry later"
            log.warning("receiver.kafka_publish_failed", extra={"error": str(exc)})
            raise KafkaUnavailableError(msg) from exc

    async def check(self) -> str | None:
        if self._producer is None:
            return self._last_error
        checked_at, result = self._probe
        now = time.monotonic()
        if now - checked_at < _READY_CACHE_SECONDS:
            return result
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
                ok = await self._producer.client.force_metadata_update()
        except TimeoutError:
            ok = False
        result = None if ok else f"no metadata from {self._settings.bootstrap_servers}"
        self._probe = (now, result)
        return result
