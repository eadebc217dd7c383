"""The tests' one way to read "every record there is": a read_committed reader from each
partition's first offset to the end offsets at the time of the call."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.ingest.kafka import rewind


async def read_to_end(kafka: str, partitions: Sequence[TopicPartition], *,
                      timeout: float = 30, **options: Any) -> list[Any]:
    """Every committed record of ``partitions`` (and any that arrived past the end offsets in
    the same fetch: an extra record is never missed). ``options`` go to the consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", **options)
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(list(partitions))
        await rewind(consumer, partitions)
        ends = await consumer.end_offsets(list(partitions))
        deadline = time.monotonic() + timeout
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            topics = sorted({tp.topic for tp in partitions})
            assert time.monotonic() < deadline, f"{topics} not read to the end"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def read_topic(kafka: str, topic: str, timeout: float = 30) -> list[Any]:
    """Every record of ``topic`` (made by ``new_topic``: 3 partitions), read to its end
    offsets."""
    return await read_to_end(kafka, [TopicPartition(topic, p) for p in range(3)],
                             timeout=timeout)
