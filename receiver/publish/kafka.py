"""The Kafka publisher: an idempotent aiokafka producer with ``acks=all``, behind a circuit breaker.

The producer connects in the background, so the process starts (and answers
``/healthz``) while Kafka is still coming up; until it is connected ``/readyz`` is 503
and publishing raises ``KafkaUnavailableError``. Each publish waits for the broker's
acknowledgement, bounded by ``publish_timeout_seconds``; concurrent requests share
batches, which is what keeps an awaited ack cheap.

The breaker: a watcher asks the broker for metadata every ``_WATCH_SECONDS`` (a killed
broker refuses at once, a hung one does not answer within ``_PROBE_TIMEOUT_SECONDS``),
and a publish that times out or fails counts too. While the breaker is open, a publish
is refused at once, without handing anything to the producer, so senders get their 503
in milliseconds instead of waiting out the timeout, and the publishes already waiting
are answered at once too; the watcher probes every
``_OPEN_WATCH_SECONDS`` and closes the breaker on the first answer (half-open: one probe
decides). A publish that was handed over and then timed out may still be written once
the broker answers: the 503 says so, and the retry carries the same event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from receiver.errors import ConfigError, KafkaUnavailableError
from receiver.events import Record
from receiver.publish.partitioner import partition_for
from receiver.settings import KafkaSettings

log = logging.getLogger("receiver.publish")

_MAY_BE_WRITTEN = (
    "Kafka {what}; the event may already be written: retry with the same body (the event id is the same, "
    "so the copy is recognised)"
)

_PROBE_TIMEOUT_SECONDS = 1.0
_WATCH_SECONDS = 1.0  # metadata probe period while the breaker is closed
_OPEN_WATCH_SECONDS = 0.25  # and while it is open: it closes within this of the broker answering
OPEN_RETRY_AFTER = 2  # seconds a refused sender is told to wait
_SWEEP_SECONDS = 0.1  # publish deadlines are kept to this precision


class Breaker:
    """Open while the broker is known not to answer; what ``/readyz`` and the metrics read."""

    def __init__(self) -> None:
        self.open_reason: str | None = "connecting"
        self.on_change: Callable[[], None] | None = None  # told when it opens or closes

    @property
    def is_open(self) -> bool:
        return self.open_reason is not None

    def trip(self, reason: str) -> None:
        was_open = self.is_open
        if not was_open:
            log.warning("receiver.kafka_breaker_open", extra={"reason": reason})
        self.open_reason = reason
        if not was_open and self.on_change is not None:
            self.on_change()

    def reset(self) -> None:
        if self.open_reason is None:
            return
        log.info("receiver.kafka_breaker_closed", extra={"was": self.open_reason})
        self.open_reason = None
        if self.on_change is not None:
            self.on_change()


class KafkaPublisher:
    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._waiting: dict[asyncio.Task[Any], float] = {}  # publishes waiting for their ack -> deadline
        self._given_up: dict[asyncio.Task[Any], str] = {}  # cancelled by the sweep, and why
        self.breaker = Breaker()
        # Taken once: on Python 3.11 every argument-less get_running_loop()/current_task()
        # makes a getpid syscall, and publish() is on every request's path.
        self._loop: asyncio.AbstractEventLoop | None = None

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
        self._loop = asyncio.get_running_loop()
        self._connector = self._loop.create_task(self._connect(first), name="kafka-connect")
        return self

    async def close_gate(self) -> None:
        """Stop watching the broker and sweeping deadlines (shutdown)."""
        for task in (self._watcher, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        await self.close_gate()
        if self._producer is not None:
            # stop() flushes what is still buffered; a dead broker must not hold shutdown past its
            # budget (the audit trail's final flush had the other half). Whatever was not
            # acknowledged was answered 503, so no sender was promised it.
            within = self._settings.shutdown_timeout_seconds / 2
            try:
                async with asyncio.timeout(within):
                    await self._producer.stop()
            except TimeoutError:
                log.warning("receiver.kafka_flush_timeout", extra={"seconds": within})

    async def _connect(self, producer: AIOKafkaProducer) -> None:
        """Start the producer, retrying with capped exponential backoff until it connects."""
        delay = 0.5
        while True:
            try:
                await producer.start()
            except KafkaError as exc:
                self.breaker.trip(f"cannot reach {self._settings.bootstrap_servers}: {type(exc).__name__}")
                log.warning(
                    "receiver.kafka_connect_retry", extra={"retry_in_seconds": round(delay, 1), "error": str(exc)}
                )
            except asyncio.CancelledError:
                await producer.stop()  # shutdown before Kafka ever answered
                raise
            else:
                self._producer = producer
                log.info("receiver.kafka_connected", extra={"bootstrap_servers": self._settings.bootstrap_servers})
                self.breaker.reset()
                self._watcher = asyncio.create_task(self._watch(producer), name="kafka-watch")
                self._sweeper = asyncio.create_task(self._sweep(), name="kafka-deadlines")
                return
            await producer.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            producer = self._new_producer()

    async def publish(self, records: Sequence[Record]) -> None:
        producer = self._producer
        if producer is None or self.breaker.is_open:
            reason = self.breaker.open_reason or "not connected"
            msg = f"Kafka is unreachable ({reason}); nothing was written: retry in {OPEN_RETRY_AFTER} s"
            raise KafkaUnavailableError(msg, retry_after=OPEN_RETRY_AFTER)
        # One deadline sweep for every waiting publish instead of a timer each: the sweeper
        # (and the breaker, when it opens) cancels the waits it gives up on.
        loop = self._loop or asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is not None:
            self._waiting[task] = loop.time() + self._settings.publish_timeout_seconds
        try:
            acks = [await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)) for r in records]
            for ack in acks:  # each resolves when its batch is acknowledged
                await ack
        except asyncio.CancelledError:
            why = self._given_up.pop(task, None) if task is not None else None
            if why is None or task is None:
                raise  # not ours: the request itself was cancelled
            task.uncancel()
            raise KafkaUnavailableError(_MAY_BE_WRITTEN.format(what=why)) from None
        except KafkaError as exc:
            log.warning("receiver.kafka_publish_failed", extra={"error": str(exc)})
            raise KafkaUnavailableError(_MAY_BE_WRITTEN.format(what=f"failed ({type(exc).__name__})")) from exc
        finally:
            if task is not None:
                self._waiting.pop(task, None)

    def _give_up(self, task: asyncio.Task[Any], why: str) -> None:
        if task not in self._given_up:
            self._given_up[task] = why
            task.cancel()

    async def _sweep(self) -> None:
        """Give up on publishes past their deadline; on all of them while the breaker is open."""
        timeout = self._settings.publish_timeout_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = loop.time()
            for task, deadline in list(self._waiting.items()):
                if self.breaker.is_open:
                    self._give_up(task, f"became unreachable ({self.breaker.open_reason})")
                elif deadline <= now:
                    self.breaker.trip(f"no acknowledgement within {timeout:g} s")
                    log.warning("receiver.kafka_publish_timeout", extra={"seconds": timeout})
                    self._give_up(task, f"did not acknowledge within {timeout:g} s")

    async def check(self) -> str | None:
        return self.breaker.open_reason

    async def _watch(self, producer: AIOKafkaProducer) -> None:
        """Open the breaker when the broker stops answering metadata; close it on the first answer."""
        while True:
            await asyncio.sleep(_OPEN_WATCH_SECONDS if self.breaker.is_open else _WATCH_SECONDS)
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
                    answered = await producer.client.force_metadata_update()
            except (TimeoutError, KafkaError):
                answered = False
            if answered:
                self.breaker.reset()
            else:
                self.breaker.trip(f"no metadata from {self._settings.bootstrap_servers}")
