"""Positions in the database (consumers/ingest/positions.py): a batch read again after its rows
were committed is skipped, not written again; a member behind the database cannot write; a
row the database refused is dead-lettered again, with its reason, when its record is read again.

The members here are real Runners on a real consumer and pool, driven batch by batch as the
consume loop would after fetching (the crash itself is in test_ingest_resilience.py). Every
row a statement tries to write is counted by a BEFORE trigger into a sequence, which a
rollback does not undo: a replayed bar that an upsert would leave unchanged, or a COPY that a
stored key fails, still counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import msgspec
import pytest
from aiokafka.structs import ConsumerRecord

from consumers import topics
from consumers.contracts.bars import Bar
from consumers.ingest.checkpoint import Batch, _offset_spans
from consumers.ingest.kafka import DeadLetter, make_consumer
from consumers.ingest.pipelines.base import staging_tables
from consumers.ingest.runner import Runner
from consumers.platform.db import create_pool
from consumers.platform.maintenance import maintain
from consumers.platform.settings import Settings, load_settings
from tests.support.builders import fill
from tests.support.harness import ingest_environment
from tests.support.stack import Stack

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)

COUNT_WRITES = """
CREATE SEQUENCE test_row_writes;
CREATE FUNCTION test_count_row_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('test_row_writes');
    -- TG_ARGV, not TG_TABLE_NAME: on TimescaleDB the trigger runs on the chunks
    IF TG_ARGV[0] = 'bars' AND NEW.symbol = 'REFUSED' THEN
        RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_count_writes BEFORE INSERT OR UPDATE ON market_conditions
    FOR EACH ROW EXECUTE FUNCTION test_count_row_write('bars');
CREATE TRIGGER test_count_writes BEFORE INSERT OR UPDATE ON trade_fills
    FOR EACH ROW EXECUTE FUNCTION test_count_row_write('fills');
"""


class Member:
    """One consumer-group member's write path: a Runner on its own consumer and pool."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipelines = topics.pipelines(settings, ["bars", "fills"])
        self.bars = topics.kafka_topic(settings, "bars")
        self.fills = topics.kafka_topic(settings, "fills")

    async def __aenter__(self) -> Member:
        self.pool = await create_pool(self.settings.database_url,
                                      staging_tables(list(self.pipelines.values())))
        self.consumer = make_consumer(self.settings)
        await self.consumer.start()
        self.runner = Runner(self.settings, self.consumer, self.pool, None, self.pipelines)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.pool.close()

    def batch(self, topic: str, values: Sequence[bytes], first_offset: int = 0) -> Batch:
        batch = Batch(generation=0)
        batch.add(self.pipelines[topic], [record(topic, first_offset + i, v)
                                          for i, v in enumerate(values)])
        return batch

    async def write(self, topic: str, batch: Batch) -> tuple[list[DeadLetter], int, int]:
        """Write as a flush does: (dead letters of refused rows, skipped, written)."""
        return await self.runner._checkpoint._write_unwritten(
            topic, self.pipelines[topic], batch, _offset_spans(batch.records))


def record(topic: str, offset: int, value: bytes, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic=topic, partition=partition, offset=offset, timestamp=0,
                          timestamp_type=0, key=None, value=value, checksum=None,
                          serialized_key_size=0, serialized_value_size=len(value), headers=())


def bar_values(symbol: str, minutes: range, close: str = "10.5") -> list[bytes]:
    return [msgspec.json.encode(Bar(
        symbol=symbol, timestamp=T0 + timedelta(minutes=m), open=Decimal("10"),
        high=Decimal("100"), low=Decimal("1"), close=Decimal(close) + Decimal(m) / 1000,
        volume=m)) for m in minutes]


@pytest.fixture
async def db(any_db: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(any_db)
    try:
        await conn.execute(COUNT_WRITES)
    finally:
        await conn.close()
    yield any_db


async def attempted_writes(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        # the sequence's last value, or 0 before its first use
        return int(await conn.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_row_writes"))
    finally:
        await conn.close()


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_a_batch_read_again_after_its_rows_were_committed_is_skipped_not_rewritten(
    stack: Stack, db: str
) -> None:
    settings = load_settings(ingest_environment(stack.kafka, db))
    trade = uuid.uuid4()
    fills = [msgspec.json.encode(f) for f in (
        fill(trade, "BUY", 10, "100", 0), fill(trade, "SELL", 4, "101", 5),
        fill(trade, "SELL", 6, "102", 9))]
    async with Member(settings) as first:
        # rows committed, then the process died before Kafka's commit (none was sent here)
        assert await first.write(first.bars, first.batch(first.bars, bar_values("A", range(10)))) \
            == ([], 0, 10)
        assert await first.write(first.fills, first.batch(first.fills, fills[:2])) == ([], 0, 2)
    assert await attempted_writes(db) == 12
    outcome_before = await fetch(db, "SELECT * FROM trade_outcomes")

    async with Member(settings) as next_owner:  # reads again from Kafka's last commit: 0
        replay = next_owner.batch(next_owner.bars, bar_values("A", range(15)))
        assert await next_owner.write(next_owner.bars, replay) == ([], 10, 5)
        assert await next_owner.write(next_owner.fills, next_owner.batch(
            next_owner.fills, fills)) == ([], 2, 1)
    assert await attempted_writes(db) == 12 + 5 + 1  # not one of the replayed rows again
    assert len(await fetch(db, "SELECT 1 FROM market_conditions")) == 15
    [outcome] = await fetch(db, "SELECT * FROM trade_outcomes")
    assert outcome["quantity"] == 10 and outcome["exit_time"] is not None  # the third fill closed it
    assert outcome_before[0]["entry_time"] == outcome["entry_time"]
    [position] = await fetch(
        db, "SELECT next_offset, from_offset FROM ingest_positions WHERE topic = "
            f"'{next_owner.bars}' AND consumer_group = '{settings.consumer_group}'")
    assert tuple(position) == (15, 10)


async def test_a_member_behind_the_database_cannot_write_over_what_the_next_owner_wrote(
    stack: Stack, db: str
) -> None:
    """A member that lost its partition without knowing (a zombie) flushes a batch the new
    owner has written already, with other values: its transaction is refused, it reads the
    position again and skips the batch."""
    settings = load_settings(ingest_environment(stack.kafka, db))
    async with Member(settings) as zombie, Member(settings) as owner:
        assert await zombie.write(zombie.bars, zombie.batch(zombie.bars, bar_values("Z", range(5)))) \
            == ([], 0, 5)
        # the owner reads from the last commit, skips 0-4 and writes 5-9 (the newer values)
        newer = owner.batch(owner.bars, bar_values("Z", range(10), close="20"))
        assert await owner.write(owner.bars, newer) == ([], 5, 5)
        # the zombie still believes the position is 5
        stale = zombie.batch(zombie.bars, bar_values("Z", range(5, 10)), first_offset=5)
        await zombie.runner._flush_locked(zombie.bars, stale)
    closes = [r["close"] for r in await fetch(
        db, "SELECT close FROM market_conditions WHERE symbol = 'Z' ORDER BY timestamp")]
    assert closes[5:] == [Decimal("20") + Decimal(m) / 1000 for m in range(5, 10)]
    assert await attempted_writes(db) == 10  # the zombie's five were never tried


async def test_a_refused_row_read_again_is_dead_lettered_again_with_its_reason(
    stack: Stack, db: str
) -> None:
    """Refused rows' dead letters go out with Kafka's commit; if the process dies first, the
    records are read again, skipped, and their dead letters sent then, with the reason the
    database gave the first time (stored with the position that passed them)."""
    settings = load_settings(ingest_environment(stack.kafka, db))
    trade = uuid.uuid4()
    flip = [msgspec.json.encode(f) for f in (
        fill(trade, "BUY", 10, "100", 0), fill(trade, "SELL", 25, "101", 5),  # a flip: refused
        fill(trade, "SELL", 10, "102", 9))]
    bars = bar_values("A", range(3)) + bar_values("REFUSED", range(1)) + bar_values("A", range(3, 6))
    async with Member(settings) as first:
        bar_letters, skipped, written = await first.write(first.bars, first.batch(first.bars, bars))
        assert (skipped, written) == (0, 6)
        assert [(d.record.offset, d.error_class) for d in bar_letters] == [(3, "CheckViolationError")]
        fill_letters, _, _ = await first.write(first.fills, first.batch(first.fills, flip))
        assert [(d.record.offset, d.error_class) for d in fill_letters] == [(1, "LedgerError")]
    writes = await attempted_writes(db)

    async with Member(settings) as next_owner:
        again, skipped, written = await next_owner.write(
            next_owner.bars, next_owner.batch(next_owner.bars, bars))
        assert (skipped, written) == (7, 0)
        assert [(d.record.offset, d.error_class, d.reason) for d in again] \
            == [(d.record.offset, d.error_class, d.reason) for d in bar_letters]
        again, skipped, written = await next_owner.write(
            next_owner.fills, next_owner.batch(next_owner.fills, flip))
        assert (skipped, written) == (3, 0)
        assert [(d.record.offset, d.reason) for d in again] \
            == [(d.record.offset, d.reason) for d in fill_letters]
    assert await attempted_writes(db) == writes
    stored = await fetch(db, "SELECT topic, kafka_offset, error_class FROM ingest_rejections "
                             "ORDER BY topic, kafka_offset")
    assert sorted((r["kafka_offset"], r["error_class"]) for r in stored) \
        == [(1, "LedgerError"), (3, "CheckViolationError")]
    assert json.dumps(sorted(r["topic"] for r in stored)) \
        == json.dumps(sorted([next_owner.bars, next_owner.fills]))


async def test_maintain_forgets_rejections_after_a_week(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO ingest_rejections (consumer_group, topic, kafka_partition, kafka_offset,"
            " error_class, reason, rejected_at) VALUES"
            " ('g', 't', 0, 1, 'E', 'old', now() - interval '8 days'),"
            " ('g', 't', 0, 2, 'E', 'recent', now() - interval '6 days')")
        assert (await maintain(conn)).rejections_forgotten == 1
        assert [r["reason"] for r in await conn.fetch("SELECT reason FROM ingest_rejections")] \
            == ["recent"]
    finally:
        await conn.close()
