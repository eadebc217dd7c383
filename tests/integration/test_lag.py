"""Consumer lag at /metrics is the broker's view (end offset minus the group's committed
offset, per partition this member holds), and it keeps moving while a flush is blocked."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumers.contracts.bars import Bar
from tests.support.clock import T0
from tests.support.harness import (
    PARTITIONS,
    Ingest,
    consume_serving_metrics,
    eventually,
    ingest_environment,
)
from tests.support.http import get
from tests.support.private_postgres import PrivatePostgres
from tests.support.stack import Stack

Lag = dict[tuple[str, int], float]


async def exported_lag(port: int) -> Lag:
    status, body = await get(port, "/metrics")
    if status != 200:
        return {}
    return {(sample.labels["topic"], int(sample.labels["partition"])): sample.value
            for family in text_string_to_metric_families(body)
            if family.name == "cie_consumer_lag_messages" for sample in family.samples}


async def broker_lag(ingest: Ingest, topics: list[str]) -> Lag:
    """What the broker says, asked independently (as kcat or kafka-consumer-groups would):
    end offsets of read_committed readers minus the group's committed offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=ingest.settings.kafka_bootstrap_servers,
                                group_id=ingest.settings.consumer_group,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): float(ends[tp] - (await consumer.committed(tp) or 0))
                for tp in partitions}
    finally:
        await consumer.stop()


def bars(minutes: range) -> list[Bar]:
    return [Bar(symbol=f"L{m % 7}", timestamp=T0 + timedelta(minutes=m), open=Decimal(1),
                high=Decimal(1), low=Decimal(1), close=Decimal(1), volume=m) for m in minutes]


async def test_lag_is_the_brokers_view_and_moves_while_a_flush_is_blocked(
    stack: Stack, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    plain_db = await private_postgres.migrated()  # its own server: this test stops it
    environment = ingest_environment(stack.kafka, plain_db, CIE_LAG_REFRESH_SECONDS="1")
    ingest = Ingest(environment)
    await ingest.open()
    topics = [ingest.topic(name) for name in ingest.table]
    try:
        async with consume_serving_metrics(environment, tmp_path / "consume.log") as (_, port):
            await ingest.send(bars(range(30)))
            await ingest.drained("bars", 30)
            # one series per partition of every topic this (only) member holds, all caught up
            caught_up = {(t, p): 0.0 for t in topics for p in range(PARTITIONS)}
            assert await eventually(lambda: exported_lag(port), caught_up) == caught_up

            await private_postgres.stop()  # the next flush blocks, retrying
            try:
                await ingest.send(bars(range(30, 50)))
                behind = await broker_lag(ingest, topics)
                assert sum(behind.values()) == 20
                assert await eventually(lambda: exported_lag(port), behind) == behind
            finally:
                await private_postgres.start()
            await ingest.drained("bars", 50, timeout=90)
            assert await eventually(lambda: exported_lag(port), caught_up) == caught_up
    finally:
        await ingest.close()
