"""Publishing: records leave the receiver only through a ``Publisher``.

``publish`` returns only once the records are durable (Kafka acknowledged them with
``acks=all``, or the embedded store committed them); otherwise it raises
``UnavailableError`` and the sender is told to retry. Nothing is answered 2xx early.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from receiver.events import Record
from receiver.settings import Settings


class Publisher(Protocol):
    """Where accepted events go."""

    name: str

    async def publish(self, records: Sequence[Record]) -> None:
        """Return once every record is durably written; raise ``UnavailableError`` if not."""
        ...

    async def check(self) -> str | None:
        """``None`` when ready to publish, else why not (shown by ``/readyz``)."""
        ...


@asynccontextmanager
async def open_publisher(settings: Settings) -> AsyncIterator[Publisher]:
    """Kafka when ``kafka.bootstrap_servers`` is set, else the embedded SQLite store."""
    if settings.kafka.bootstrap_servers:
        from receiver.publish.kafka import KafkaPublisher  # noqa: PLC0415 - only loaded when used

        async with KafkaPublisher(settings.kafka) as kafka:
            yield kafka
    else:
        from receiver.publish.store import StorePublisher  # noqa: PLC0415

        async with StorePublisher(settings.store.path) as store:
            yield store
