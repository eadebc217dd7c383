"""`cie`: the one entry point. Each subcommand builds Settings once and passes them down."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from consumers import maintenance, migrations
from consumers.db import connect
from consumers.errors import CieError
from consumers.logs import configure_logging
from consumers.settings import Settings, load_settings

log = structlog.get_logger(__name__)

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        if args.status:
            for step in await migrations.status(conn):
                print(f"{step.action:<28} {step.filename}")
            return 0
        steps = await migrations.migrate(
            conn,
            dry_run=args.dry_run,
            use_timescaledb=False if args.without_timescaledb else None,
        )
    finally:
        await conn.close()
    verb = "would" if args.dry_run else "did"
    for step in steps:
        print(f"{verb} {step.action:<6} {step.filename}")
    if not steps:
        print("schema is up to date")
    return 0


async def cmd_maintain(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        report = await maintenance.maintain(conn, batch_rows=args.batch_rows)
    finally:
        await conn.close()
    log.info("maintain.done", timescaledb=report.timescaledb,
             summary_days_refreshed=report.summary_days_refreshed,
             rows_deleted=report.rows_deleted)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cie",
        description="Analytics ingestion for the Continuous Improvement Engine. Configuration "
        "comes from the environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, CIE_*).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply the schema/*.sql migrations")
    migrate.add_argument("--status", action="store_true", help="list each file's state")
    migrate.add_argument("--dry-run", action="store_true", help="list what would run")
    migrate.add_argument(
        "--without-timescaledb", action="store_true",
        help="take the plain-PostgreSQL path even where TimescaleDB is available",
    )
    migrate.set_defaults(run=cmd_migrate)

    maintain = sub.add_parser(
        "maintain", help="plain PostgreSQL: refresh daily summaries, delete expired rows"
    )
    maintain.add_argument("--batch-rows", type=int, default=10_000,
                          help="rows per delete or refresh batch (default 10000)")
    maintain.set_defaults(run=cmd_maintain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except CieError as exc:
        print(f"cie: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    run: Command = args.run
    try:
        return asyncio.run(run(settings, args))
    except CieError as exc:
        log.error("command.failed", command=args.command, error=str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
