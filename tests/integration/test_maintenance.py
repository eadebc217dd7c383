"""`cie maintain` on plain PostgreSQL: summaries refreshed incrementally, expired rows deleted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from consumers.platform.maintenance import maintain
from tests.integration.market_data import (
    expected_summary,
    insert_bars,
    same_numbers,
    summaries,
    three_bars,
    utc_day,
)


@pytest.fixture
async def db(plain_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_db, server_settings={"timezone": "UTC"})
    yield conn
    await conn.close()


async def test_summaries_have_hand_computed_values(db: asyncpg.Connection) -> None:
    await insert_bars(db, three_bars("MSFT", utc_day(2)) + three_bars("NVDA", utc_day(0)))
    report = await maintain(db, batch_rows=1)  # one day per batch: the loop must go round
    assert report.summary_days_refreshed == 2
    msft, nvda = await summaries(db)
    assert same_numbers(msft, expected_summary("MSFT", utc_day(2)))
    assert same_numbers(nvda, expected_summary("NVDA", utc_day(0)))
    assert await db.fetchval("SELECT count(*) FROM market_daily_summary_pending") == 0


async def test_only_touched_days_are_recomputed_and_late_bars_count(db: asyncpg.Connection) -> None:
    await insert_bars(db, three_bars("MSFT", utc_day(2)) + three_bars("NVDA", utc_day(1)))
    await maintain(db)
    assert (await maintain(db)).summary_days_refreshed == 0  # nothing touched since

    late = utc_day(2) + timedelta(hours=15)
    await db.execute(
        "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
        "VALUES ('MSFT', $1, 102.25, 105, 102, 104, 500)", late)
    assert (await maintain(db)).summary_days_refreshed == 1
    msft = (await summaries(db))[0]
    assert (msft["high"], msft["close"], msft["volume"], msft["bar_count"]) == (
        Decimal("105"), Decimal("104"), Decimal(6500), 4)

    # a correction (upsert) is a touch too
    await db.execute("UPDATE market_conditions SET close = 103.5 WHERE timestamp = $1", late)
    assert (await maintain(db)).summary_days_refreshed == 1
    assert (await summaries(db))[0]["close"] == Decimal("103.5")


async def test_retention_deletes_only_expired_rows_and_keeps_summaries(db: asyncpg.Connection) -> None:
    await insert_bars(db, three_bars("OLD", utc_day(3)) + three_bars("NEW", utc_day(0)))
    await maintain(db)
    recent_trade, old_trade = uuid.uuid4(), uuid.uuid4()
    for trade, days in ((recent_trade, 10), (old_trade, 6 * 365)):
        await db.execute(
            "INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, "
            "entry_time, entry_price, quantity) VALUES ($1, 's', 'v', 'X', 'LONG', now() - $2::interval, 1, 1)",
            trade, timedelta(days=days))
    # pretend two days have passed for the bars: keep raw bars one day only
    await db.execute("UPDATE retention_rules SET keep_for = '1 day' WHERE table_name = 'market_conditions'")
    report = await maintain(db, batch_rows=2)
    assert report.rows_deleted["market_conditions"] == 3
    # trades go only once archived (tests/integration/test_archive.py): this one is not
    assert report.rows_deleted["trade_outcomes"] == 0
    assert await db.fetchval("SELECT array_agg(DISTINCT symbol) FROM market_conditions") == ["NEW"]
    assert await db.fetchval("SELECT count(*) FROM trade_outcomes WHERE trade_id = ANY($1)",
                             [recent_trade, old_trade]) == 2
    assert [s["symbol"] for s in await summaries(db)] == ["NEW", "OLD"]


async def test_an_expired_day_is_never_recomputed_from_partial_data(db: asyncpg.Connection) -> None:
    await insert_bars(db, three_bars("OLD", utc_day(3)))
    await maintain(db)
    before = await summaries(db)
    await db.execute("UPDATE retention_rules SET keep_for = '1 day' WHERE table_name = 'market_conditions'")
    # a straggler for the expired day arrives after the day's summary was made
    await db.execute(
        "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
        "VALUES ('OLD', $1, 1, 1, 1, 1, 1)", utc_day(3) + timedelta(hours=20))
    await maintain(db)
    assert await summaries(db) == before


async def test_a_backfill_is_summarised_before_retention_deletes_its_day(
    db: asyncpg.Connection,
) -> None:
    day = utc_day(60)
    await insert_bars(db, three_bars("BACK", day))
    await maintain(db)
    [summary] = await summaries(db)
    assert same_numbers(summary, expected_summary("BACK", day))
    await db.execute("UPDATE retention_rules SET keep_for = '50 days' "
                     "WHERE table_name = 'market_conditions'")
    report = await maintain(db)
    assert report.rows_deleted["market_conditions"] == 3
    assert await summaries(db) == [summary]


async def test_retention_deletes_whole_days_and_never_a_pending_one(db: asyncpg.Connection) -> None:
    """A day still waiting for its summary (a late bar written after this run's refresh) is
    not deleted; the day holding the horizon is kept whole, so it can still be recomputed."""
    from consumers.platform.db import queries

    await insert_bars(db, three_bars("WAIT", utc_day(60)) + three_bars("EDGE", utc_day(50)))
    await maintain(db)
    await db.execute("INSERT INTO market_daily_summary_pending VALUES ('WAIT', $1)", utc_day(60))
    horizon = timedelta(days=50, hours=15)  # inside EDGE's day, after two of its bars
    status = await db.execute(queries("maintenance")["expire_market_conditions"], horizon, 100)
    assert status == "DELETE 0"
    await db.execute("DELETE FROM market_daily_summary_pending")
    status = await db.execute(queries("maintenance")["expire_market_conditions"], horizon, 100)
    assert status == "DELETE 3"  # WAIT's day; EDGE's day holds the horizon and stays whole
    assert await db.fetchval("SELECT array_agg(DISTINCT symbol) FROM market_conditions") == ["EDGE"]


async def test_maintain_leaves_timescaledb_to_its_jobs(timescale_db: str) -> None:
    conn = await asyncpg.connect(timescale_db)
    try:
        report = await maintain(conn)
    finally:
        await conn.close()
    assert report.timescaledb and report.rows_deleted == {}
