"""What landed in Kafka: records on a topic carrying a marker, and records per produce batch.

The record check reads the topic back with a consumer. The batch figure comes from the
broker's own segment files through Kafka's ``DumpLogSegments``: without
``--print-data-log`` it prints one line per record batch with ``count: N``, and one batch
is what one producer request carried for one partition.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import BenchError

READ_SECONDS = 60.0  # bound on reading one topic back
_COUNT = re.compile(r"\bcount: (\d+)")


@dataclass(frozen=True)
class TopicCount:
    """Records on a topic: by offsets, as read, and as read carrying the expected marker."""

    by_offsets: int
    read: int
    matching: int


@dataclass(frozen=True)
class Batches:
    """Record batches in a topic's log segments."""

    batches: int
    records: int

    @property
    def mean(self) -> float:
        return self.records / self.batches if self.batches else float("nan")


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition ids from the cluster metadata; none when the topic does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only needed at the very end

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="receiver-bench")
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"] for t in described if t["topic"] == topic and t["error_code"] == 0 for p in t["partitions"]
    )


async def count_records(bootstrap: str, topic: str, marker: bytes) -> TopicCount:
    """Read ``topic`` from the start and count the records whose value contains ``marker``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 - only needed at the very end

    async with asyncio.timeout(READ_SECONDS):
        tps = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
        if not tps:
            return TopicCount(0, 0, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="receiver-bench",
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            first = await consumer.beginning_offsets(tps)
            last = await consumer.end_offsets(tps)
            for tp in tps:  # an explicit offset, set now: no background reset can race the reads below
                consumer.seek(tp, first[tp])
            read = matching = 0
            pending = [tp for tp in tps if last[tp] > first[tp]]
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=20000)
                for records in batch.values():
                    for record in records:
                        read += 1
                        matching += marker in record.value
                pending = [tp for tp in pending if await consumer.position(tp) < last[tp]]
            return TopicCount(sum(last[tp] - first[tp] for tp in tps), read, matching)
        finally:
            await consumer.stop()


def batch_sizes(lib: Path, data_dir: Path, topics: list[str]) -> dict[str, Batches]:
    """Record batches per topic, from every segment of every partition, in one JVM run."""
    # Topic names are [A-Za-z0-9._-] (the receiver's settings say so): nothing in them is special to glob.
    files = {str(segment): topic for topic in topics for segment in sorted(data_dir.glob(f"{topic}-*/*.log"))}
    found = {topic: Batches(0, 0) for topic in topics}
    if not files:
        return found
    argv = [
        "java", "-Xmx256m", "-cp", f"{lib}/*", "kafka.tools.DumpLogSegments",
        "--files", ",".join(files),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        msg = f"DumpLogSegments failed (exit {result.returncode}):\n{result.stderr[-2000:]}"
        raise BenchError(msg)
    topic = None
    for line in result.stdout.splitlines():
        if line.startswith("Dumping "):
            topic = files.get(line.removeprefix("Dumping ").strip())
            continue
        match = _COUNT.search(line)
        if topic is not None and match is not None:
            seen = found[topic]
            found[topic] = Batches(seen.batches + 1, seen.records + int(match.group(1)))
    return found
