"""`cie archive --status`: what S3 holds per month, and what retention still waits to remove."""

from __future__ import annotations

from consumers.archive.archiver import TABLES
from consumers.platform.db import Conn, queries


async def status_lines(conn: Conn) -> list[str]:
    """One line per archived month, then one per table: its rows past retention still kept
    (removed once archived)."""
    sql = queries("archive")
    lines = [f"{row['table_name']:<15} {row['month']:%Y-%m}  parts {row['parts']}  rows "
             f"{row['rows']}  bytes {row['bytes']}"
             + (f"  net_pnl {row['net_pnl']}" if row["net_pnl"] is not None else "")
             for row in await conn.fetch(sql["status"])]
    for table, (time_column, _) in TABLES.items():
        rule = await conn.fetchrow(sql["rule"], table)
        assert rule is not None
        waiting = await conn.fetchval(sql["rows_past_retention"].format(
            table=f'"{table}"', time=f'"{time_column}"'), rule["keep_for"])
        lines.append(f"{table}: {waiting} rows past retention ({rule['keep_for'].days} days) "
                     "still in the table (removed by retention once archived)")
    return lines
