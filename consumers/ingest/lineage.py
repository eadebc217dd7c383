"""`cie trace FILL_ID|TRADE_ID`: the Kafka records behind a stored fill or trade.

Each fill's source (topic, partition, offset, the producer's `source` and `traceparent`
headers) is stored with it, in the same transaction (trade_fill_sources, migration 26). A
trade's chain is its fills': the opening fill (the earliest filled_at; a late earlier fill
re-keys the trade and becomes it) and the latest received (the highest offset: a trade's
fills share a key, so one partition). The records themselves are read back from Kafka while
the topic retains them (7 days by default); after that the coordinates remain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.contracts.encoding import readable
from consumers.ingest.kafka import client_options
from consumers.ingest.replay import printable
from consumers.platform.db import Conn, queries
from consumers.platform.settings import Settings

RECORD_READ_SECONDS = 10  # per record: a retained record arrives in well under a second


class Source(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    producer: str | None
    traceparent: str | None


class KafkaRecord(msgspec.Struct, frozen=True):
    """A record as read back: key and value as text (MessagePack shown as JSON, non-printable
    characters escaped)."""

    timestamp_ms: int
    key: str | None
    value: str | None
    headers: dict[str, str]


class TracedFill(msgspec.Struct):
    fill_id: UUID
    filled_at: datetime
    side: str
    quantity: Decimal
    price: Decimal
    source: Source | None  # None: stored before lineage, or not read from Kafka
    opening: bool = False
    latest: bool = False
    record: KafkaRecord | None = None
    record_note: str | None = None  # why the record is not shown


class Trace(msgspec.Struct):
    asked: UUID
    trade_id: UUID
    trade: dict[str, Any] | None  # its trade_outcomes row, None if not derived (yet)
    fills: list[TracedFill]


async def trace(conn: Conn, asked: UUID) -> Trace | None:
    """The trade that ``asked`` names (a fill's id or a trade's) and its fills' sources."""
    rows = await conn.fetch(queries("lineage")["trace_fills"], asked)
    if not rows:
        return None
    trade_id = rows[0]["trade_id"]
    fills = [TracedFill(
        fill_id=r["fill_id"], filled_at=r["filled_at"], side=r["side"], quantity=r["quantity"],
        price=r["price"], source=None if r["topic"] is None else Source(
            r["topic"], r["kafka_partition"], r["kafka_offset"], r["producer"],
            r["traceparent"])) for r in rows]
    fills[0].opening = True
    sourced = [f for f in fills if f.source is not None]
    if sourced:
        max(sourced, key=lambda f: f.source.offset if f.source else -1).latest = True
    trade = await conn.fetchrow(queries("lineage")["trace_trade"], trade_id)
    return Trace(asked, trade_id, dict(trade) if trade else None, fills)


async def read_records(settings: Settings, fills: Sequence[TracedFill]) -> None:
    """Fill in each sourced fill's record from Kafka, or say why it cannot be shown."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        for fill in fills:
            if fill.source is None:
                fill.record_note = "no source stored (written before lineage was recorded)"
                continue
            fill.record, fill.record_note = await _read(consumer, fill.source)
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer,
                source: Source) -> tuple[KafkaRecord | None, str | None]:
    tp = TopicPartition(source.topic, source.partition)
    consumer.assign([tp])
    first = (await consumer.beginning_offsets([tp]))[tp]
    if source.offset < first:
        return None, f"no longer in Kafka (the partition starts at offset {first} now)"
    consumer.seek(tp, source.offset)
    try:
        async with asyncio.timeout(RECORD_READ_SECONDS):
            record = await consumer.getone(tp)
    except TimeoutError:
        return None, f"not read within {RECORD_READ_SECONDS} s"
    if record.offset != source.offset:
        return None, f"offset {source.offset} is gone (compacted or aborted)"
    return KafkaRecord(
        timestamp_ms=record.timestamp,
        key=None if record.key is None else printable(record.key.decode(errors="replace")),
        value=None if record.value is None else printable(
            readable(record.value, record.headers)),
        headers={k: printable((v or b"").decode(errors="replace"))
                 for k, v in record.headers or ()},
    ), None
