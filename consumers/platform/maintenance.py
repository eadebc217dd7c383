"""`cie maintain`: retention and daily summaries on plain PostgreSQL.

On TimescaleDB its jobs do this work (retention, compression and continuous-aggregate
policies), so maintain only reports that. On plain PostgreSQL it

1. refreshes market_daily_summary for every (symbol, day) a bar write touched since the last
   run, in bounded batches, before
2. deleting rows past each table's retention (``retention_rules``) in batches of ``batch_rows``,
   one short transaction each, so no lock is held for long and replicas keep up; except
3. trade_outcomes and trade_fills, which are removed a month at a time and only once
   `cie archive` has verified that month in S3: when the month holds exactly the rows archived
   and not yet removed (archive_slices). A month not archived, or with a late row not archived
   yet, stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import structlog

from consumers.platform.db import queries
from consumers.platform.migrations import timescaledb_usable

log = structlog.get_logger(__name__)


@dataclass
class MaintenanceReport:
    timescaledb: bool
    summary_days_refreshed: int = 0
    rows_deleted: dict[str, int] = field(default_factory=dict)


async def maintain(conn: asyncpg.Connection, *, batch_rows: int = 10_000) -> MaintenanceReport:
    plain_path = await conn.fetchval(queries("maintenance")["plain_path"])
    if not plain_path and await timescaledb_usable(conn):
        log.info("maintain.skipped", reason="TimescaleDB jobs own retention and summaries")
        return MaintenanceReport(timescaledb=True)
    report = MaintenanceReport(timescaledb=False)
    report.summary_days_refreshed = await refresh_daily_summaries(conn, batch_rows=batch_rows)
    for rule in await conn.fetch(queries("maintenance")["retention_rules"]):
        if rule["table_name"] in ARCHIVED_FIRST:
            deleted = await _remove_archived(conn, rule)
        else:
            deleted = await _expire(conn, rule, batch_rows)
        report.rows_deleted[rule["table_name"]] = deleted
        log.info("maintain.retention", table=rule["table_name"], keep_for=str(rule["keep_for"]),
                 rows_deleted=deleted)
    return report


async def refresh_daily_summaries(conn: asyncpg.Connection, *, batch_rows: int = 10_000) -> int:
    """Recompute every pending summary day; returns how many days were written."""
    sql = queries("maintenance")
    keep_raw: timedelta = await conn.fetchval(sql["raw_bars_keep_for"])
    refreshed = 0
    while True:
        row = await conn.fetchrow(sql["refresh_summary_days"], batch_rows, keep_raw)
        assert row is not None
        refreshed += int(row["refreshed"])
        if int(row["claimed"]) < batch_rows:
            break
    log.info("maintain.daily_summaries", days_refreshed=refreshed)
    return refreshed


# Removed only once archived (consumers/archive/): the archiver names the same two.
ARCHIVED_FIRST = frozenset({"trade_outcomes", "trade_fills"})


async def _remove_archived(conn: asyncpg.Connection, rule: asyncpg.Record) -> int:
    sql = queries("maintenance")
    names = {"table": rule["table_ident"], "column": rule["column_ident"]}
    removed = 0
    for due in await conn.fetch(sql["archived_slices_due"], rule["table_name"],
                                rule["keep_for"]):
        async with conn.transaction():
            live = await conn.fetchval(sql["slice_rows"].format(**names), due["slice_start"],
                                       due["slice_end"])
            if live != due["archived_live"]:  # a late row: archived first, removed next time
                log.warning("maintain.not_archived_yet", table=rule["table_name"],
                            slice_start=due["slice_start"].isoformat(), rows=live,
                            archived=due["archived_live"])
                continue
            await conn.execute(sql["remove_slice"].format(**names), due["slice_start"],
                               due["slice_end"])
            await conn.execute(sql["record_slice_removed"], rule["table_name"],
                               due["slice_start"])
            removed += live
    return removed


async def _expire(conn: asyncpg.Connection, rule: asyncpg.Record, batch_rows: int) -> int:
    # Identifiers were quoted by PostgreSQL (quote_ident) from retention_rules, a table only
    # migrations write; values are parameters. Raw bars have their own rule: whole days, each
    # summarised first.
    sql = queries("maintenance")
    delete = (
        sql["expire_market_conditions"] if rule["table_name"] == "market_conditions"
        else sql["expire_rows"].format(table=rule["table_ident"], column=rule["column_ident"])
    )
    total = 0
    while True:
        status = await conn.execute(delete, rule["keep_for"], batch_rows)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch_rows:
            return total
