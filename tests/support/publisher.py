"""``MemoryPublisher``: the ``Publisher`` interface kept in a list, for tests that need no broker."""

from __future__ import annotations

from collections.abc import Sequence

from receiver.errors import KafkaUnavailableError
from receiver.events import Record


class MemoryPublisher:
    """Records every published record in order; after ``fail()`` refuses as an unreachable broker would."""

    name = "memory"

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._failure: str | None = None

    def fail(self, reason: str = "the broker is unreachable (MemoryPublisher.fail)") -> None:
        """From now on ``publish`` raises ``KafkaUnavailableError`` and ``check`` reports ``reason``."""
        self._failure = reason

    def recover(self) -> None:
        self._failure = None

    def on(self, topic: str) -> list[Record]:
        """The records published to ``topic``, in order."""
        return [record for record in self.records if record.topic == topic]

    async def publish(self, records: Sequence[Record]) -> None:
        # All or nothing, as with Kafka: a refused call keeps none of its records.
        if self._failure is not None:
            raise KafkaUnavailableError(self._failure)
        self.records.extend(records)

    async def check(self) -> str | None:
        return self._failure
