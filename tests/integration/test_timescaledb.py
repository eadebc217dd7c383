"""The TimescaleDB path for real: hypertables, policies, continuous aggregate, upserts.

Runs wherever the local PostgreSQL has the extension; skipped with that reason elsewhere.
Jobs are run with CALL run_job(...) rather than waited for, except in the tests that watch the
server's scheduler run a policy, and a failing job get exported.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from consumers.platform import migrations
from tests.support.clock import MONDAY, at
from tests.support.market_data import (
    expected_summary,
    insert_bars,
    same_numbers,
    summaries,
    three_bars,
    utc_day,
)
from tests.support.stack import UNSCHEDULE_JOBS, Stack

pytestmark = pytest.mark.timescaledb


@pytest.fixture
async def ts(timescale_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(timescale_db, server_settings={"timezone": "UTC"})
    yield conn
    await conn.close()


async def job_id(conn: asyncpg.Connection, proc: str, relation: str) -> int:
    job = await conn.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = $1 AND hypertable_name = $2", proc, relation)
    assert job is not None, (proc, relation)
    return int(job)


async def test_migration_schedules_every_policy(stack: Stack, empty_db: str) -> None:
    """Production databases run their policies; only the suite's test databases unschedule
    them (conftest), so this checks a database migrated from nothing."""
    if not stack.timescaledb:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL")
    conn = await asyncpg.connect(empty_db)
    try:
        await migrations.migrate(conn, use_timescaledb=True)
        jobs = await conn.fetch("SELECT proc_name, scheduled FROM timescaledb_information.jobs "
                                "WHERE job_id >= 1000")
    finally:
        await conn.close()
    # 3 retention, 5 compression (trade_fill_sources: 27), the summary's refresh, the
    # archived-chunk drop (16) and the summarised-bar drop (21)
    assert len(jobs) == 11 and all(job["scheduled"] for job in jobs), jobs
    assert {"cie_drop_archived_chunks", "cie_drop_summarised_bars"} <= {
        job["proc_name"] for job in jobs}


async def test_hypertables_have_the_seed_chunk_intervals(ts: asyncpg.Connection) -> None:
    rows = await ts.fetch(
        "SELECT hypertable_name, column_name, time_interval "
        "FROM timescaledb_information.dimensions WHERE hypertable_schema = 'public'")
    assert {(r["hypertable_name"], r["column_name"], r["time_interval"]) for r in rows} >= {
        ("market_conditions", "timestamp", timedelta(days=1)),
        ("trade_outcomes", "entry_time", timedelta(weeks=1)),
        ("model_predictions", "predicted_at", timedelta(weeks=1)),
        ("trade_fills", "filled_at", timedelta(weeks=1)),
    }


async def test_retention_compression_and_refresh_jobs_exist(ts: asyncpg.Connection) -> None:
    rows = await ts.fetch(
        "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs "
        "WHERE hypertable_name IS NOT NULL")
    jobs = {(r["proc_name"], r["hypertable_name"]): json.loads(r["config"]) for r in rows}
    retention = {t: c["drop_after"] for (p, t), c in jobs.items() if p == "policy_retention"}
    assert retention == {  # trades: dropped once archived (cie_drop_archived_chunks, 16);
        # raw bars: once summarised (cie_drop_summarised_bars, 21)
        "model_predictions": "3 years", "market_daily_summary": "10 years",
        "trade_fill_sources": "5 years",  # lineage points into Kafka: no archive (27)
    }
    for proc in ("cie_drop_archived_chunks", "cie_drop_summarised_bars"):
        assert await ts.fetchval("SELECT count(*) FROM timescaledb_information.jobs "
                                 "WHERE proc_name = $1", proc) == 1
    compression = {t for (p, t) in jobs if p in ("policy_compression", "policy_columnstore")}
    assert compression == {"market_conditions", "model_predictions", "trade_outcomes", "trade_fills",
                           "trade_fill_sources"}
    assert ("policy_refresh_continuous_aggregate", "market_daily_summary") in jobs


async def test_continuous_aggregate_refreshes_with_hand_computed_values(
    ts: asyncpg.Connection,
) -> None:
    day = utc_day(2)
    await insert_bars(ts, three_bars("MSFT", day))
    assert await summaries(ts) == []  # materialized only: nothing until a refresh
    await ts.execute("CALL refresh_continuous_aggregate('market_daily_summary', NULL, NULL)")
    [summary] = await summaries(ts)
    assert same_numbers(summary, expected_summary("MSFT", day))

    # a corrected bar reaches the summary at the next refresh
    await ts.execute(
        "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
        "VALUES ('MSFT', $1, 101.5, 104, 101, 103.75, 3000) ON CONFLICT (symbol, timestamp) "
        "DO UPDATE SET high = EXCLUDED.high, close = EXCLUDED.close",
        day + timedelta(hours=14, minutes=2))
    await ts.execute("CALL refresh_continuous_aggregate('market_daily_summary', NULL, NULL)")
    [summary] = await summaries(ts)
    assert (summary["high"], summary["close"]) == (Decimal("104"), Decimal("103.75"))


async def test_both_paths_summarise_a_day_identically(ts: asyncpg.Connection, plain_db: str) -> None:
    from consumers.platform.maintenance import maintain

    bars = three_bars("MSFT", utc_day(3)) + three_bars("NVDA", utc_day(1))
    await insert_bars(ts, bars)
    await ts.execute("CALL refresh_continuous_aggregate('market_daily_summary', NULL, NULL)")
    plain = await asyncpg.connect(plain_db, server_settings={"timezone": "UTC"})
    try:
        await insert_bars(plain, bars)
        await maintain(plain)
        plain_rows = await summaries(plain)
    finally:
        await plain.close()
    ts_rows = await summaries(ts)
    assert len(ts_rows) == 2
    assert all(same_numbers(a, b) for a, b in zip(plain_rows, ts_rows, strict=True))


async def test_on_conflict_upserts_work_on_every_hypertable(ts: asyncpg.Connection) -> None:
    t = at(MONDAY, 13)
    trade, prediction, fill = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for _ in range(2):  # the second round must update, not duplicate
        await ts.execute(
            "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
            "VALUES ('AAPL', $1, 10, 11, 9, 10.5, 100) ON CONFLICT (symbol, timestamp) "
            "DO UPDATE SET volume = market_conditions.volume + 1", t)
        await ts.execute(
            "INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, "
            "entry_time, entry_price, quantity, outcome_type) VALUES ($1, 's', 'v', 'AAPL', 'LONG', "
            "$2, 10, 5, 'OPEN') ON CONFLICT (trade_id, entry_time) DO UPDATE SET quantity = "
            "trade_outcomes.quantity + 5", trade, t)
        await ts.execute(
            "INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol, "
            "predicted_at, prediction_horizon_minutes, feature_vector) VALUES ($1, 'v', "
            "'direction', 'AAPL', $2, 5, '{}') ON CONFLICT (prediction_id, predicted_at) "
            "DO NOTHING", prediction, t)
        await ts.execute(
            "INSERT INTO trade_fills (fill_id, trade_id, strategy_id, model_version, symbol, side, "
            "quantity, price, filled_at) VALUES ($1, $2, 's', 'v', 'AAPL', 'BUY', 5, 10, $3) "
            "ON CONFLICT (fill_id, filled_at) DO NOTHING", fill, trade, t)
    assert await ts.fetchval("SELECT volume FROM market_conditions") == 101
    assert await ts.fetchval("SELECT quantity FROM trade_outcomes") == 10
    assert await ts.fetchval("SELECT count(*) FROM model_predictions") == 1
    assert await ts.fetchval("SELECT count(*) FROM trade_fills") == 1


async def custom_job(conn: asyncpg.Connection, proc: str) -> int:
    job = await conn.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1", proc)
    assert job is not None, proc
    return int(job)


async def test_retention_job_drops_only_expired_chunks(ts: asyncpg.Connection) -> None:
    old, recent = utc_day(3 * 365), utc_day(1)
    await insert_bars(ts, three_bars("OLD", old) + three_bars("NEW", recent))
    await ts.execute("CALL run_job($1)", await custom_job(ts, "cie_drop_summarised_bars"))
    assert await ts.fetchval("SELECT array_agg(DISTINCT symbol) FROM market_conditions") == ["NEW"]


async def test_a_history_load_older_than_retention_is_summarised_before_it_goes(
    ts: asyncpg.Connection,
) -> None:
    """Bars loaded three years back fall in no refresh window (the hourly policy looks back as
    far as raw bars are kept): the drop job summarises each expiring chunk's (symbol, day)
    pairs before dropping it. A day summarised and dropped before keeps its summary when a
    straggler arrives for it, and a new symbol on that day gets its own."""
    old = utc_day(3 * 365)
    drop = await custom_job(ts, "cie_drop_summarised_bars")
    await insert_bars(ts, three_bars("KEPT", old))
    await ts.execute("CALL run_job($1)", await job_id(
        ts, "policy_refresh_continuous_aggregate", "market_daily_summary"))
    assert await summaries(ts) == []  # the policy's window does not reach them
    await ts.execute("CALL run_job($1)", drop)
    assert await ts.fetchval("SELECT count(*) FROM market_conditions") == 0
    [kept] = await summaries(ts)
    assert same_numbers(kept, expected_summary("KEPT", old))

    await insert_bars(ts, three_bars("HIST", old) + three_bars("HIST", old + timedelta(days=1)))
    await ts.execute(  # a straggler for a day whose bars went
        "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
        "VALUES ('KEPT', $1, 1, 1, 1, 1, 1)", old + timedelta(hours=20))
    await ts.execute("CALL run_job($1)", drop)
    assert await ts.fetchval("SELECT count(*) FROM market_conditions") == 0
    first, second, still = await summaries(ts)
    assert same_numbers(first, expected_summary("HIST", old))
    assert same_numbers(second, expected_summary("HIST", old + timedelta(days=1)))
    assert still == kept


async def test_a_backfill_older_than_a_month_is_summarised_before_its_raw_rows_go(
    ts: asyncpg.Connection,
) -> None:
    """The refresh window used to be the last 30 days: older backfills were never summarised,
    and their raw rows went at retention, leaving no trace of the day."""
    day = utc_day(60)
    await insert_bars(ts, three_bars("BACK", day))
    refresh = await job_id(ts, "policy_refresh_continuous_aggregate", "market_daily_summary")
    await ts.execute("CALL run_job($1)", refresh)  # the production policy, as scheduled
    [summary] = await summaries(ts)
    assert same_numbers(summary, expected_summary("BACK", day))

    # retention moves past the day: its raw rows go, its summary stays, also after a refresh
    await ts.execute("UPDATE retention_rules SET keep_for = '50 days' "
                     "WHERE table_name = 'market_conditions'")
    await ts.execute("SELECT cie_schedule_market_data_jobs()")
    await ts.execute(UNSCHEDULE_JOBS)  # the new jobs run when this test says, not by chance
    await ts.execute("CALL run_job($1)", await custom_job(ts, "cie_drop_summarised_bars"))
    assert await ts.fetchval("SELECT count(*) FROM market_conditions") == 0
    await ts.execute("CALL run_job($1)", await job_id(
        ts, "policy_refresh_continuous_aggregate", "market_daily_summary"))
    assert await summaries(ts) == [summary]


async def test_compression_job_compresses_old_chunks_and_corrections_still_land(
    ts: asyncpg.Connection,
) -> None:
    day = utc_day(10)
    await insert_bars(ts, three_bars("AMD", day))
    proc = await ts.fetchval(
        "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name = "
        "'market_conditions' AND proc_name IN ('policy_compression', 'policy_columnstore')")
    await ts.execute("CALL run_job($1)", await job_id(ts, proc, "market_conditions"))
    assert await ts.fetchval(
        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'market_conditions'")
    await ts.execute(
        "INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume) "
        "VALUES ('AMD', $1, 100, 101, 99, 100.75, 1000) ON CONFLICT (symbol, timestamp) "
        "DO UPDATE SET close = EXCLUDED.close", day + timedelta(hours=14))
    assert await ts.fetchval(
        "SELECT close FROM market_conditions WHERE symbol = 'AMD' AND timestamp = $1",
        day + timedelta(hours=14)) == Decimal("100.75")
    assert await ts.fetchval("SELECT count(*) FROM market_conditions") == 3


async def test_the_compression_policy_runs_in_the_background_on_schedule(
        stack: Stack, empty_db: str) -> None:
    """Nobody calls run_job here: the server's scheduler runs the schema's compression policy
    when it falls due, and it succeeds (on PostgreSQL 15.20 with TimescaleDB 2.28.3 every
    background job failed, so nothing was ever compressed). A database migrated from nothing,
    as in production: in one cloned from the suite's template the template's own policy runs,
    cut short by the cloning, count as crashes, and the scheduler backs off for minutes."""
    if not stack.timescaledb:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL")
    ts = await asyncpg.connect(empty_db, server_settings={"timezone": "UTC"})
    try:
        await migrations.migrate(ts, use_timescaledb=True)
        await insert_bars(ts, three_bars("AMD", utc_day(10)))
        job = await ts.fetchval(
            "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = "
            "'market_conditions' AND proc_name IN ('policy_compression', 'policy_columnstore')")
        due = await ts.fetchval(  # it would run in 12 hours: it falls due now instead
            "SELECT now() FROM alter_job($1, next_start => now())", job)
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            run = await ts.fetchrow(
                "SELECT last_run_status FROM timescaledb_information.job_stats "
                "WHERE job_id = $1 AND last_run_started_at >= $2 "
                "AND last_run_duration IS NOT NULL", job, due)
            if run is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, await ts.fetch(
                "SELECT * FROM timescaledb_information.job_stats WHERE job_id = $1", job)
            await asyncio.sleep(0.5)
        errors = await ts.fetch("SELECT sqlerrcode, err_message FROM "
                                "timescaledb_information.job_errors WHERE job_id = $1", job)
        assert run["last_run_status"] == "Success", errors
        assert await ts.fetchval(
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'market_conditions'")
    finally:
        await ts.close()


async def test_ingest_role_creates_chunks_on_hypertables(ts: asyncpg.Connection) -> None:
    await ts.execute("SET ROLE cie_ingest")
    await insert_bars(ts, three_bars("TSLA", utc_day(40)))
    assert await ts.fetchval("SELECT count(*) FROM market_conditions") == 3


async def test_a_job_that_fails_in_the_background_is_exported(
        ts: asyncpg.Connection, timescale_db: str) -> None:
    """TimescaleDB's scheduler runs the policies inside the server, where nobody sees one fail:
    every consumer exports cie_timescaledb_job_failed (the CieTimescaleJobFailing alert) by
    procedure and relation, 1 once a job's last run failed, 0 for one not run yet."""
    from prometheus_client import REGISTRY

    from consumers.platform import health
    from tests.support.harness import eventually

    await ts.execute("""
        CREATE PROCEDURE cie_test_out_of_disk(job_id int, config jsonb) LANGUAGE plpgsql
        AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$""")
    await ts.execute("CREATE PROCEDURE cie_test_tomorrow(job_id int, config jsonb) "
                     "LANGUAGE plpgsql AS $$ BEGIN END $$")
    await ts.execute("SELECT add_job('cie_test_out_of_disk', interval '1 hour', "
                     "initial_start => now())")  # scheduled: the server runs it at once
    await ts.execute("SELECT add_job('cie_test_tomorrow', interval '1 day', "
                     "initial_start => now() + interval '1 day')")
    # a database cloned from a template gets its scheduler at the launcher's next poll (a
    # minute); this starts it now
    await ts.execute("SELECT _timescaledb_functions.start_background_workers()")

    def exported(job: str, relation: str) -> float | None:
        return REGISTRY.get_sample_value("cie_timescaledb_job_failed",
                                         {"job": job, "relation": relation})

    async def failed_and_not_run() -> tuple[float | None, float | None]:
        return exported("cie_test_out_of_disk", ""), exported("cie_test_tomorrow", "")

    checks = health.Health(timescale_db, None)
    watcher = asyncio.create_task(checks.watch(every=0.1))
    try:
        assert await eventually(failed_and_not_run, (1.0, 0.0)) == (1.0, 0.0)
        # the schema's policies, by the relation they keep (their values depend on whether
        # the server ran them before the suite unscheduled them)
        assert exported("policy_compression", "market_conditions") is not None
        assert exported("policy_refresh_continuous_aggregate",
                        "market_daily_summary") is not None
    finally:
        watcher.cancel()
        await checks.close()
    assert await ts.fetchval(
        "SELECT last_run_status FROM timescaledb_information.job_stats AS s "
        "JOIN timescaledb_information.jobs USING (job_id) "
        "WHERE proc_name = 'cie_test_out_of_disk'") == "Failed"
