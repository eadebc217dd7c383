"""Runtime roles: cie_ingest writes but cannot change the schema; cie_rollup recomputes the
figures and writes no fact; cie_scheduler runs the optimization queue; cie_notifier records
notifications and nothing else; cie_analytics only reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from consumers.platform.db import SCHEMA, queries
from tests.support.builders import insert, valid_rows

WRITTEN_BY_INGEST = [
    "trade_outcomes", "trade_fills", "model_predictions", "market_conditions",
    "strategy_performance", "model_performance", "improvement_events", "ab_tests",
    "optimization_queue",
]


@pytest.fixture
def db(module_conn: asyncpg.Connection) -> asyncpg.Connection:
    return module_conn


async def denied(conn: asyncpg.Connection, statement: str) -> bool:
    try:
        async with conn.transaction():  # a savepoint: the outer transaction survives
            await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        return True
    return False


async def test_ingest_writes_every_table_it_fills(db: asyncpg.Connection) -> None:
    await db.execute("SET ROLE cie_ingest")
    for table in WRITTEN_BY_INGEST:
        await insert(db, table, valid_rows()[table])
    await db.execute("UPDATE market_conditions SET close = 10.25")
    await db.execute("DELETE FROM trade_outcomes")  # re-keying a trade whose entry moved
    await db.execute("CREATE TEMP TABLE staging (LIKE market_conditions)")
    assert await db.fetchval("SELECT count(*) FROM market_conditions") == 1


@pytest.mark.parametrize("statement", [
    "DROP TABLE market_conditions",
    "ALTER TABLE trade_outcomes ADD COLUMN extra int",
    "TRUNCATE model_predictions",
    "DELETE FROM market_conditions",
    "CREATE TABLE sneaky (x int)",
    "DROP INDEX idx_trade_outcomes_time",
    "UPDATE retention_rules SET keep_for = '1 day'",
    "DELETE FROM rollup_pending",  # it marks work; taking the marks is the rollup's
    "DELETE FROM strategy_performance",
    # whether an event was announced is the notifier's (22): no silencing Discord
    "UPDATE improvement_events SET discord_notified = true",
    "UPDATE improvement_events SET notification_message_id = 'x'",
    "INSERT INTO improvement_events (event_id, event_type, component_type, component_id, "
    "discord_notified) VALUES (gen_random_uuid(), 'x', 'x', 'x', true)",
])
async def test_ingest_cannot_change_schema_or_delete_history(
    db: asyncpg.Connection, statement: str
) -> None:
    await db.execute("SET ROLE cie_ingest")
    assert await denied(db, statement)


@pytest.mark.parametrize("statement", [
    "INSERT INTO market_conditions (symbol, timestamp) VALUES ('X', now())",
    "UPDATE trade_outcomes SET net_pnl = 0",
    "DELETE FROM model_predictions",
    "UPDATE retention_rules SET keep_for = '1 day'",
    "DROP TABLE strategy_performance",
    "CREATE TABLE sneaky (x int)",
])
async def test_rollup_writes_figures_and_no_fact(db: asyncpg.Connection, statement: str) -> None:
    await db.execute("SET ROLE cie_rollup")
    assert not await denied(db, "DELETE FROM rollup_pending")
    assert not await denied(db, "DELETE FROM strategy_performance")
    assert await denied(db, statement)


async def test_scheduler_runs_its_pass_and_touches_nothing_else(db: asyncpg.Connection) -> None:
    # due before this transaction began (now() is its start)
    due = {**valid_rows()["optimization_queue"], "next_run_at": datetime.now(UTC) - timedelta(days=1)}
    await insert(db, "optimization_queue", due)
    await insert(db, "optimization_queue", {**due, "status": "failed", "consecutive_failures": 9})
    await db.execute("SET ROLE cie_scheduler")
    sql = queries("scheduler")
    assert len(await db.fetch(sql["reap_stuck"], 60)) == 0
    settled = await db.fetchrow(sql["settle_failed"], 3, 60)  # disables: an improvement event
    assert (settled["retried"], settled["disabled"]) == (0, 1)
    assert len(await db.fetch(sql["claim_due"], 10)) == 1
    for statement in ["DELETE FROM optimization_queue", "UPDATE improvement_events SET "
                      "discord_notified = true", "SELECT count(*) FROM trade_fills",
                      "INSERT INTO ab_tests (test_id) VALUES (gen_random_uuid())",
                      "CREATE TABLE sneaky (x int)"]:
        assert await denied(db, statement), statement


async def test_notifier_records_notifications_and_touches_nothing_else(
    db: asyncpg.Connection,
) -> None:
    await insert(db, "improvement_events", valid_rows()["improvement_events"])
    await db.execute("SET ROLE cie_notifier")
    sql = queries("notifier")
    owner = "00000000-0000-0000-0000-00000000000a"
    [event] = await db.fetch(sql["lease"], 10, owner, 60, 24)
    assert await db.fetchval(sql["mark_posting"], event["id"], owner) == 1
    await db.execute(sql["record_posted"], event["id"], owner, "123456789")
    assert await db.fetchval("SELECT notification_message_id FROM improvement_events") == (
        "123456789")
    for statement in ["DELETE FROM improvement_events",
                      "UPDATE improvement_events SET new_value = '{}'",
                      "INSERT INTO improvement_events (event_id, event_type, component_type, "
                      "component_id) VALUES (gen_random_uuid(), 'x', 'x', 'x')",
                      "SELECT count(*) FROM trade_outcomes", "UPDATE ab_tests SET status = 'x'",
                      "CREATE TABLE sneaky (x int)"]:
        assert await denied(db, statement), statement


async def test_nobody_but_the_owner_creates_in_public(db: asyncpg.Connection) -> None:
    """Said by the migrations (12), not left to PostgreSQL 15's default."""
    await db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # as an older server had it
    await db.execute((SCHEMA / "12-rollup-role.sql").read_text())
    assert not await db.fetchval("SELECT has_schema_privilege('public', 'public', 'CREATE')")


async def test_analytics_reads_everything_and_writes_nothing(db: asyncpg.Connection) -> None:
    for table in WRITTEN_BY_INGEST:
        await insert(db, table, valid_rows()[table])
    await db.execute("SET ROLE cie_analytics")
    for table in [*WRITTEN_BY_INGEST, "market_daily_summary", "retention_rules"]:
        await db.fetchval(f"SELECT count(*) FROM {table}")
    for table in WRITTEN_BY_INGEST:
        assert await denied(db, f"DELETE FROM {table}")
        assert await denied(db, f"UPDATE {table} SET created_at = now()")
    assert await denied(db, "INSERT INTO market_conditions (symbol, timestamp, open, high, low, "
                            "close, volume) VALUES ('X', now(), 1, 1, 1, 1, 1)")


async def test_each_runtime_role_can_check_the_schema_is_current(db: asyncpg.Connection) -> None:
    """Every command checks the migration ledger at start (migrations.require_current), as
    the role it runs as; and reads the scheduled commands' last successes."""
    from consumers.platform import migrations

    for role in ("cie_ingest", "cie_analytics", "cie_rollup", "cie_scheduler", "cie_notifier",
                 "cie_archiver"):
        await db.execute(f"SET ROLE {role}")
        await migrations.require_current(db)
        await db.fetchval("SELECT count(*) FROM command_runs")
        assert await denied(db, "DELETE FROM schema_migrations")
        await db.execute("RESET ROLE")


async def test_the_archiver_updates_only_what_it_records(db: asyncpg.Connection) -> None:
    """cie_archiver records parts and slices and marks manifests written; the columns
    retention trusts (counts, checksums, epochs, removals) are not its to rewrite (23)."""
    sql = queries("archive")
    part, slice_ = valid_rows()["archive_parts"], valid_rows()["archive_slices"]
    await db.execute("SET ROLE cie_archiver")
    await insert(db, "archive_parts", part)
    await db.execute(sql["manifest_written"], part["object_key"])
    await db.execute(sql["record_slice"], "trade_outcomes", slice_["slice_start"],
                     slice_["slice_end"], 10, 123, 0)
    await db.execute(sql["record_slice"], "trade_outcomes", slice_["slice_start"],
                     slice_["slice_end"], 11, 456, 0)  # archived again: the upsert
    await db.execute(sql["record_bucket"], "s3://b/p", "Enabled")
    await db.execute(sql["record_bucket"], "s3://b/p", "Suspended")
    for statement in ["UPDATE archive_parts SET row_count = 0",
                      "UPDATE archive_parts SET sha256 = repeat('0', 64)",
                      "UPDATE archive_slices SET epoch = epoch + 1",
                      "UPDATE archive_slices SET removed_rows = 0",
                      "DELETE FROM archive_parts",
                      "DELETE FROM archive_slices"]:
        assert await denied(db, statement), statement
