"""The project's Kafka wiring on the real broker: ``make_producer`` and ``make_consumer`` as
every command uses them (manual commits, earliest on a new group, read_committed, fetches
bounded by CIE_BATCH_MAX_ROWS), 10,000 messages through a group across a restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumers.ingest.kafka import make_consumer, make_producer
from consumers.platform.settings import Settings, load_settings
from tests.support.stack import NewTopics, Stack

TOTAL = 10_000
BATCH = 300
PARTITIONS = 3


def settings_for(stack: Stack, group: str) -> Settings:
    return load_settings({"KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "DATABASE_URL": "postgresql://x",
                          "CIE_CONSUMER_GROUP": group, "CIE_BATCH_MAX_ROWS": str(BATCH)})


async def produce(settings: Settings, topic: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        sends = [await producer.send(topic, key=str(i % 97).encode(),
                                     value=json.dumps({"seq": i}).encode())
                 for i in range(TOTAL)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def consume(settings: Settings, topic: str, *, stop_after: int) -> tuple[list[int], int]:
    """Read as the runner does: each fetched batch is 'processed', then its offsets committed.
    Returns the sequence numbers read and the largest batch one fetch returned."""
    consumer = make_consumer(settings)
    consumer.subscribe([topic])
    await consumer.start()
    seen: list[int] = []
    largest = 0
    deadline = time.monotonic() + 60
    try:
        while len(seen) < stop_after:
            assert time.monotonic() < deadline, f"read {len(seen)} of {stop_after}"
            batches = await consumer.getmany(timeout_ms=200)
            largest = max(largest, sum(len(records) for records in batches.values()))
            for records in batches.values():
                seen.extend(json.loads(r.value)["seq"] for r in records)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return seen, largest


async def committed_and_end(settings: Settings, topic: str) -> tuple[int, int]:
    """The group's committed offsets and the topic's end offsets, summed over partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=settings.consumer_group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        committed = [await consumer.committed(tp) or 0 for tp in partitions]
        return sum(committed), sum(ends.values())
    finally:
        await consumer.stop()


async def test_ten_thousand_messages_once_per_group_across_a_restart(
    stack: Stack, new_topic: NewTopics
) -> None:
    topic = await new_topic("roundtrip", partitions=PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = settings_for(stack, group)
    await produce(settings, topic)

    first, largest = await consume(settings, topic, stop_after=4_000)
    assert 4_000 <= len(first) < TOTAL
    assert 0 < largest <= BATCH  # a fetch never hands the runner more than one batch
    # the restarted member resumes at the committed offsets (not at 'earliest' again)
    second, _ = await consume(settings, topic, stop_after=TOTAL - len(first))
    assert sorted(first + second) == list(range(TOTAL))  # all of them, none twice
    # and the group has committed everything: a third member would get nothing
    assert await committed_and_end(settings, topic) == (TOTAL, TOTAL)

    other, _ = await consume(settings_for(stack, f"{group}-other"), topic, stop_after=TOTAL)
    assert sorted(other) == list(range(TOTAL))  # a new group starts at the earliest offset


async def test_operator_settings_reach_the_group_membership(
    stack: Stack, new_topic: NewTopics
) -> None:
    """CIE_KAFKA_GROUP_INSTANCE_ID makes the member static (KIP-345), as the broker reports
    it (with the session and heartbeat settings it must join with)."""
    topic = await new_topic("static", partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = load_settings({
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "DATABASE_URL": "postgresql://x",
        "CIE_CONSUMER_GROUP": group, "CIE_KAFKA_GROUP_INSTANCE_ID": "cie-ingest-0",
        "CIE_KAFKA_SESSION_TIMEOUT_MS": "12000", "CIE_KAFKA_HEARTBEAT_INTERVAL_MS": "2000"})
    consumer = make_consumer(settings)
    consumer.subscribe([topic])
    await consumer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka)
    await admin.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "never assigned"
            await consumer.getmany(timeout_ms=200)
        [description] = await admin.describe_consumer_groups([group])
        members = description.groups[0][5]  # (error, group, state, protocol type, protocol, members)
        # the broker names a static member after its instance id (KIP-345); a dynamic one
        # after its client id
        [member_id] = [member[0] for member in members]
        assert member_id.startswith("cie-ingest-0-"), member_id
    finally:
        await admin.close()
        await consumer.stop()
