"""`cie maintain`: the data's lifetime, run hourly (the CronJob).

On TimescaleDB the policies' jobs do this work inside the server (retention, compression, the
summary's refresh, the archived-chunk and summarised-bar drops), but a scheduler that cannot
run them (out of background workers; or every job failing, as on the old line, TimescaleDB
2.28 with PostgreSQL 15.20) leaves it undone. So maintain runs in the foreground
(``CALL run_job``) every job of the project that is overdue or whose last run failed, and
records each outcome (maintenance_job_runs, exported by the consumers). The background's own
status is left as it is, so its alert still fires.

On plain PostgreSQL it

1. refreshes market_daily_summary for every (symbol, day) a bar write touched since the last
   run, in bounded batches, before
2. deleting rows past each table's retention (``retention_rules``) in batches of ``batch_rows``,
   one short transaction each, so no lock is held for long and replicas keep up; except
3. trade_outcomes and trade_fills, which are removed a month at a time and only once
   `cie archive` has verified that month in S3: one DELETE removes the month and sums what it
   removed, and is rolled back unless that is exactly the content S3 holds (count and checksum,
   archive_slices; cie_remove_archived_slice in migration 20). A month not archived, or with a
   row added or changed since, stays until `cie archive` has written it again.

On both it forgets the ingest rejections older than a week (migration 25): they are kept only
until the Kafka transaction that sends their dead letters, seconds later.
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
    jobs_run: dict[str, bool] = field(default_factory=dict)  # "proc_name relation" -> succeeded
    rejections_forgotten: int = 0


async def maintain(conn: asyncpg.Connection, *, batch_rows: int = 10_000) -> MaintenanceReport:
    plain_path = await conn.fetchval(queries("maintenance")["plain_path"])
    forgotten = await conn.fetchval(queries("maintenance")["forget_old_rejections"])
    if not plain_path and await timescaledb_usable(conn):
        report = MaintenanceReport(timescaledb=True, rejections_forgotten=forgotten)
        report.jobs_run = await run_due_jobs(conn)
        return report
    report = MaintenanceReport(timescaledb=False, rejections_forgotten=forgotten)
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


async def run_due_jobs(conn: asyncpg.Connection) -> dict[str, bool]:
    """TimescaleDB: each of the project's jobs that is overdue or whose last run failed, run
    in the foreground, one after the other (the summary's refresh before the drops)."""
    sql = queries("maintenance")
    outcomes: dict[str, bool] = {}
    for job in await conn.fetch(sql["due_jobs"]):
        name = f"{job['proc_name']} {job['relation']}".strip()
        error: str | None = None
        try:
            await conn.execute("CALL run_job($1)", job["job_id"])
        except asyncpg.PostgresError as exc:  # one job's failure does not stop the others
            error = f"{type(exc).__name__}: {exc}"
        await conn.execute(sql["record_job_run"], job["job_id"], job["proc_name"],
                           job["relation"], error is None, error)
        outcomes[name] = error is None
        if error is None:
            log.info("maintain.job_ran", job_id=job["job_id"], job=name)
        else:
            log.error("maintain.job_failed", job_id=job["job_id"], job=name, error=error)
    return outcomes


async def _remove_archived(conn: asyncpg.Connection, rule: asyncpg.Record) -> int:
    sql = queries("maintenance")
    removed = 0
    for due in await conn.fetch(sql["archived_slices_due"], rule["table_name"],
                                rule["keep_for"]):
        gone = await conn.fetchval(sql["remove_archived_slice"], rule["table_name"],
                                   due["slice_start"], due["slice_end"])
        if gone is None:  # changed or added since archived: archived again first
            log.warning("maintain.not_archived_yet", table=rule["table_name"],
                        slice_start=due["slice_start"].isoformat())
            continue
        removed += gone
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
