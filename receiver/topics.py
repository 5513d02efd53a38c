"""The topics the config can route to, checked (or created) at startup, named by readiness.

Target topics: every default ``<prefix>.<kind>.<event>`` of the configured sources (or
their ``topic``), every topic a routing rule names, the dead-letter and audit topics.
With ``kafka.topics.create`` the missing ones are created with the configured
partitions and replication factor; otherwise readiness stays 503 naming them, and
the check is repeated until they exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from receiver.deadletter import deadletter_topic
from receiver.routing import topic_for
from receiver.settings import Settings
from receiver.sources import Source

log = logging.getLogger("receiver.topics")
RECHECK_SECONDS = 30.0


def target_topics(settings: Settings, sources: Mapping[str, Source]) -> set[str]:
    prefix = settings.kafka.topic_prefix
    topics = {deadletter_topic(prefix)}
    if settings.audit.enabled:
        topics.add(settings.audit.topic or f"{prefix}.audit")
    for source in sources.values():
        for event in source.vendor.events:
            topics.add(topic_for(prefix, source.vendor.kind, event, source.settings.topic))
    for rule in settings.routes:
        topics.update(rule.topics)
    return topics


class TopicCheck:
    """Keeps ``missing`` up to date; ``/readyz`` fails while it is not empty."""

    def __init__(self, settings: Settings, topics: set[str]) -> None:
        self._settings = settings
        self._topics = topics
        self.missing: set[str] = set(topics)
        self.error: str | None = "not checked yet"
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> None:
        kafka = self._settings.kafka
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id=f"{kafka.client_id}-admin")
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = self._topics - existing
            if missing and kafka.topics.create:
                new = [NewTopic(t, kafka.topics.partitions, kafka.topics.replication_factor) for t in sorted(missing)]
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
                log.info("receiver.topics_created", extra={"topics": sorted(missing)})
                existing = set(await admin.list_topics())
                missing = self._topics - existing
            self.missing, self.error = missing, None
            if missing:
                log.warning("receiver.topics_missing", extra={"topics": sorted(missing)})
        except KafkaError as exc:
            self.error = f"cannot list topics: {type(exc).__name__}"
        finally:
            await admin.close()

    async def _loop(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(RECHECK_SECONDS if not (self.missing or self.error) else 2.0)
            if not (self.missing or self.error):
                return

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="topic-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def problem(self) -> str | None:
        if self.error is not None:
            return self.error
        if self.missing:
            return "missing topics: " + ", ".join(sorted(self.missing))
        return None
