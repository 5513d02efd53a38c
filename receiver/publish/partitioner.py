"""Kafka's default key partitioning (murmur2, as the Java client does it), memoized.

aiokafka computes murmur2 in pure Python on every send, which costs more than the rest
of routing. Keys repeat (a subject is a device or a tenant domain), so the partition
of each (key, partition count) is remembered; the result is exactly the Java client's,
so consumers and other producers agree on where a key lives.
"""

from __future__ import annotations

import random
from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65536)
def _index(key: bytes, count: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % count


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """The partition for ``key``; keyless records go to a random available partition."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_index(key, len(all_partitions))]
