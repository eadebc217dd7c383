"""`cie maintain`: on plain PostgreSQL summaries refreshed incrementally and expired rows
deleted; on TimescaleDB the jobs its scheduler did not run, run in the foreground."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from consumers.platform.maintenance import maintain
from tests.support.market_data import (
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
    await maintain(db)  # the day's raw bars go
    assert await db.fetchval("SELECT count(*) FROM market_conditions") == 0
    # a straggler for the expired day arrives after its summary was made and its bars went
    await db.execute(
        "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
        "VALUES ('OLD', $1, 1, 1, 1, 1, 1)", utc_day(3) + timedelta(hours=20))
    await maintain(db)
    assert await summaries(db) == before


async def test_a_history_load_older_than_retention_is_summarised_before_it_goes(
    db: asyncpg.Connection,
) -> None:
    """Bars loaded three years back (a new symbol universe, research) into days whose other
    symbols were summarised and deleted long ago: the new symbols' days are summarised, the
    old summaries stay as they were, and the raw bars go."""
    old = utc_day(3 * 365)
    await insert_bars(db, three_bars("KEPT", old))
    await db.execute("UPDATE retention_rules SET keep_for = '1000 days' "
                     "WHERE table_name = 'market_conditions'")
    await maintain(db)  # summarised while raw rows were kept (say), then deleted
    assert await db.fetchval("SELECT count(*) FROM market_conditions") == 0
    await db.execute("UPDATE retention_rules SET keep_for = '2 years' "
                     "WHERE table_name = 'market_conditions'")
    await insert_bars(db, three_bars("HIST", old) + three_bars("HIST", old + timedelta(days=1)))
    await maintain(db)
    assert await db.fetchval("SELECT count(*) FROM market_conditions") == 0
    first, second, kept = await summaries(db)  # by symbol, then day
    assert same_numbers(kept, expected_summary("KEPT", old))
    assert same_numbers(first, expected_summary("HIST", old))
    assert same_numbers(second, expected_summary("HIST", old + timedelta(days=1)))


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


async def test_maintain_runs_the_timescaledb_jobs_its_scheduler_did_not(
    timescale_db: str,
) -> None:
    """Where TimescaleDB's scheduler cannot run the policies (every background job fails with
    2.28 on PostgreSQL 15.20), `cie maintain` alone compresses, expires, summarises and drops:
    each job that is overdue or failed is run in the foreground and its outcome recorded."""
    conn = await asyncpg.connect(timescale_db, server_settings={"timezone": "UTC"})
    try:
        # as in production: the jobs scheduled (the suite unschedules them), and overdue
        await conn.execute("SELECT alter_job(job_id, scheduled => true, "
                           "next_start => now() - interval '1 hour') "
                           "FROM timescaledb_information.jobs WHERE job_id >= 1000")
        await insert_bars(conn, three_bars("NEW", utc_day(10)) + three_bars("OLD", utc_day(900)))
        await conn.execute(
            "INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol, "
            "predicted_at, prediction_horizon_minutes, feature_vector) VALUES "
            "($1, 'v', 'direction', 'AAPL', now() - interval '4 years', 5, '{}'), "
            "($2, 'v', 'direction', 'AAPL', now() - interval '1 day', 5, '{}')",
            uuid.uuid4(), uuid.uuid4())

        report = await maintain(conn)

        assert report.timescaledb and report.jobs_run and all(report.jobs_run.values()), report
        assert await conn.fetchval(  # compression (bars older than 7 days)
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'market_conditions'")
        assert await conn.fetchval("SELECT count(*) FROM model_predictions") == 1  # retention
        summary = {r["symbol"]: r for r in await summaries(conn)}  # refreshed, both days
        assert same_numbers(summary["NEW"], expected_summary("NEW", utc_day(10)))
        assert same_numbers(summary["OLD"], expected_summary("OLD", utc_day(900)))
        assert await conn.fetchval(  # the old raw day went, after its summary
            "SELECT array_agg(DISTINCT symbol) FROM market_conditions") == ["NEW"]
        runs = await conn.fetch("SELECT proc_name, relation, succeeded "
                                "FROM maintenance_job_runs ORDER BY job_id")
        assert {(r["proc_name"], r["relation"]) for r in runs} >= {
            ("policy_compression", "market_conditions"),
            ("policy_retention", "model_predictions"),
            ("policy_refresh_continuous_aggregate", "market_daily_summary"),
            ("cie_drop_summarised_bars", ""), ("cie_drop_archived_chunks", "")}
        assert all(r["succeeded"] for r in runs)
    finally:
        await conn.close()


async def test_maintain_records_a_job_that_fails_and_runs_the_others(timescale_db: str) -> None:
    conn = await asyncpg.connect(timescale_db)
    try:
        await conn.execute("""
            CREATE PROCEDURE cie_test_broken(job_id int, config jsonb) LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$""")
        await conn.execute("SELECT add_job('cie_test_broken', interval '1 hour', "
                           "initial_start => now() - interval '1 hour')")
        await conn.execute("SELECT alter_job(job_id, scheduled => true, "
                           "next_start => now() - interval '1 hour') "
                           "FROM timescaledb_information.jobs "
                           "WHERE proc_name = 'cie_drop_summarised_bars'")
        report = await maintain(conn)
        assert report.jobs_run == {"cie_test_broken": False, "cie_drop_summarised_bars": True}
        error = await conn.fetchval("SELECT error FROM maintenance_job_runs "
                                    "WHERE proc_name = 'cie_test_broken'")
        assert "disk full" in error
        assert report.rows_deleted == {}  # retention on TimescaleDB is its jobs' work
    finally:
        await conn.close()
