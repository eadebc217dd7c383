"""The local broker for real: 10,000 messages through a consumer group with manual commits."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.conftest import NewTopics, Stack

TOTAL = 10_000


async def produce(stack: Stack, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=str(i % 97).encode(), value=json.dumps({"seq": i}).encode())
            for i in range(TOTAL)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def consume(stack: Stack, topic: str, group: str, *, stop_after: int, seconds: float) -> list[int]:
    """Read with manual commits: each fetched batch is 'processed', then its offsets committed."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=stack.kafka, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )
    await consumer.start()
    seen: list[int] = []
    deadline = time.monotonic() + seconds
    try:
        while len(seen) < stop_after and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batches.values():
                seen.extend(json.loads(r.value)["seq"] for r in records)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return seen


async def test_ten_thousand_messages_once_per_group_across_a_restart(
    stack: Stack, new_topic: NewTopics
) -> None:
    topic = await new_topic("roundtrip", partitions=3)
    await produce(stack, topic)
    group = f"g-{uuid.uuid4().hex[:8]}"

    first = await consume(stack, topic, group, stop_after=4_000, seconds=60)
    assert 4_000 <= len(first) < TOTAL
    # the restarted consumer resumes at the committed offsets: the rest, nothing twice
    second = await consume(stack, topic, group, stop_after=TOTAL - len(first), seconds=60)
    combined = first + second
    assert len(combined) == TOTAL
    assert sorted(combined) == list(range(TOTAL))
    # and then there is nothing left for this group
    assert await consume(stack, topic, group, stop_after=1, seconds=3) == []

    other = await consume(stack, topic, f"{group}-other", stop_after=TOTAL, seconds=60)
    assert sorted(other) == list(range(TOTAL))
