"""`cie`: the one entry point. Each subcommand builds Settings once and passes them down."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers import topics
from consumers.analytics import rollup, validator
from consumers.contracts.base import contract_schema
from consumers.errors import CieError, SettingsError
from consumers.improvement import abtest
from consumers.improvement.announce import Announcer
from consumers.improvement.discord import Webhook
from consumers.improvement.notifier import Notifier
from consumers.improvement.notifier import Rules as NotifierRules
from consumers.improvement.scheduler import Rules as SchedulerRules
from consumers.improvement.scheduler import Scheduler
from consumers.ingest import replay
from consumers.ingest.kafka import (
    DeadLetters,
    ensure_topics,
    make_consumer,
    make_dead_letter_producer,
    make_producer,
    require_broker,
    require_dead_letter_topics,
)
from consumers.ingest.lag import LagMonitor
from consumers.ingest.pipelines.base import Pipeline, staging_tables
from consumers.ingest.runner import Runner
from consumers.platform import faults, health, maintenance, migrations, processes
from consumers.platform.db import Conn, ConnectionInit, connect, create_pool, queries
from consumers.platform.logs import configure_logging
from consumers.platform.settings import DEFAULT_METRICS_PORTS, Need, Settings, load_settings

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


async def _record_success(conn: Conn, command: str, started: float) -> None:
    """For the freshness alerts: the consumers export this (cie_command_last_success_...)."""
    await conn.execute(queries("health")["record_command_success"], command,
                       time.monotonic() - started)


async def cmd_maintain(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    await _require_schema(settings)
    conn = await connect(settings.database_url)
    try:
        report = await maintenance.maintain(conn, batch_rows=args.batch_rows)
        await _record_success(conn, "maintain", started)
    finally:
        await conn.close()
    log.info("maintain.done", timescaledb=report.timescaledb,
             summary_days_refreshed=report.summary_days_refreshed,
             rows_deleted=report.rows_deleted, jobs_run=report.jobs_run)
    return 0


async def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    """Months past the horizon to Parquet in S3 (verified); or --status; or --restore."""
    from consumers.archive import archiver
    from consumers.archive.store import Location, ObjectStore

    if args.restore:
        return await _archive_restore(settings, args)
    await _require_schema(settings)
    conn = await connect(settings.database_url)
    try:
        if args.status:
            await _archive_status(conn)
            return 0
        store = ObjectStore(Location.parse(_archive_url(settings)))
        started = time.monotonic()
        horizon = (timedelta(days=settings.archive_horizon_days)
                   if settings.archive_horizon_days else None)
        parts = await archiver.archive(
            conn, store, archiver.Options(horizon, settings.archive_batch_rows, args.adopt))
        await _record_success(conn, "archive", started)
    finally:
        await conn.close()
    log.info("archive.done", parts=len(parts), rows=sum(p.rows for p in parts),
             bytes=sum(p.bytes for p in parts))
    return 0


def _archive_url(settings: Settings) -> str:
    if not settings.archive_url:
        raise SettingsError("CIE_ARCHIVE_URL: required by cie archive (s3://bucket/prefix)")
    return settings.archive_url


async def _archive_restore(settings: Settings, args: argparse.Namespace) -> int:
    """A month's parts from S3, checked against the database's records when it answers (a
    restore is also what is left when it does not)."""
    from consumers.archive import archiver
    from consumers.archive.store import Location, ObjectStore

    store = ObjectStore(Location.parse(_archive_url(settings)))
    conn: Conn | None = None
    try:
        conn = await connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("archive.restore_without_database", error=str(exc),
                    checked="against the manifests only")
    try:
        for table, rows, path in await archiver.restore(store, args.restore, args.tables,
                                                        args.into, conn):
            print(f"{table} {args.restore:%Y-%m}: {rows} rows in {path}")
    finally:
        if conn is not None:
            await conn.close()
    return 0


async def _archive_status(conn: Conn) -> None:
    from consumers.archive.archiver import TABLES

    sql = queries("archive")
    for row in await conn.fetch(sql["status"]):
        print(f"{row['table_name']:<15} {row['month']:%Y-%m}  parts {row['parts']}  rows "
              f"{row['rows']}  bytes {row['bytes']}"
              + (f"  net_pnl {row['net_pnl']}" if row["net_pnl"] is not None else ""))
    for table, (time_column, _) in TABLES.items():
        rule = await conn.fetchrow(sql["rule"], table)
        assert rule is not None
        waiting = await conn.fetchval(sql["rows_past_retention"].format(
            table=f'"{table}"', time=f'"{time_column}"'), rule["keep_for"])
        print(f"{table}: {waiting} rows past retention ({rule['keep_for'].days} days) still "
              "in the table (removed by retention once archived)")


async def cmd_rollup(settings: Settings, args: argparse.Namespace) -> int:
    await _require_schema(settings)
    conn = await connect(settings.database_url)
    reader = (await connect(settings.database_replica_url)
              if settings.database_replica_url else None)
    started = time.monotonic()
    try:
        await rollup.rollup(conn, rollup.RollupOptions.from_settings(settings), reader=reader,
                            full=args.full)
        await _record_success(conn, "rollup", started)
    finally:
        if reader:
            await reader.close()
        await conn.close()
    return 0


async def cmd_consume(settings: Settings, args: argparse.Namespace) -> int:
    pipelines = topics.pipelines(settings, args.pipelines.split(",") if args.pipelines else None)
    stop = _stop_on_signals()
    await _require_schema(settings, stop)
    await require_dead_letter_topics(settings, list(pipelines))
    producer = make_dead_letter_producer(settings)
    try:
        await producer.start()  # in the try: a start refused (an ACL, TLS) still closes it
        dead_letters = DeadLetters(producer, settings)
        await _consume(settings, pipelines, dead_letters, stop,
                       metrics_port=_metrics_port(settings, "consume"))
    finally:
        await producer.stop()
    return 0


async def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    rules = validator.Rules.from_settings(settings)
    if args.once:  # one sweep drains the backlog (a Job, a backfill, a benchmark)
        await _require_schema(settings)
        pool = await _pool(settings)
        try:
            await validator.sweep(pool, rules, batch=settings.validator_sweep_batch)
        finally:
            await pool.close()
        return 0
    # The validator is a consumer of its own group, with no dead-letter topic (the ingest
    # group dead-letters bad messages) and a periodic sweep beside it.
    settings = msgspec.structs.replace(settings, consumer_group=settings.validator_group)
    pipelines: dict[str, Pipeline] = {
        topics.kafka_topic(settings, "bars"): validator.ValidatorBarsPipeline(rules),
        topics.kafka_topic(settings, "fills"): validator.ValidatorFillsPipeline(),
    }

    async def sweeper(pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        tasks = [validator.sweep_forever(pool, rules, batch=settings.validator_sweep_batch,
                                         every=settings.validator_sweep_seconds, stop=stop)]
        if settings.validator_rollup_seconds:  # optional: keep the rollups fresh from here
            tasks.append(rollup.rollup_forever(
                pool, rollup.RollupOptions.from_settings(settings),
                every=settings.validator_rollup_seconds, stop=stop))
        await asyncio.gather(*tasks)

    stop = _stop_on_signals()
    await _require_schema(settings, stop)
    await _consume(settings, pipelines, None, stop, beside=sweeper,
                   metrics_port=_metrics_port(settings, "validate"))
    return 0


async def cmd_schedule(settings: Settings, args: argparse.Namespace) -> int:
    """The optimization scheduler: claim due tasks, publish their runs, settle failures."""
    stop = _stop_on_signals()
    await _require_schema(settings, stop)
    topic = topics.TASKS.kafka_name(settings)
    await ensure_topics(settings, [topic], partitions=args.partitions, replication_factor=None)
    pool = await _pool(settings)
    producer = make_producer(settings)
    try:
        await producer.start()
        scheduler = Scheduler(pool, producer, topic, SchedulerRules.from_settings(settings),
                              _announcer(settings, producer), abtest.Rules.from_settings(settings),
                              settings.ab_evaluate_seconds)
        await _with_health(settings, "schedule", lambda: scheduler.progressed_at,
                           lambda: scheduler.run(settings.scheduler_poll_ms / 1000, stop))
    finally:
        await producer.stop()
        await pool.close()
    return 0


def _announcer(settings: Settings, producer: AIOKafkaProducer) -> Announcer:
    """Where the scheduler publishes the improvement events it records itself."""
    return Announcer(producer, topics.kafka_topic(settings, "improvements"))


async def cmd_evaluate_ab(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate every running A/B test once (as `cie schedule` does periodically)."""
    await _require_schema(settings)
    conn = await connect(settings.database_url)
    producer = make_producer(settings)
    try:
        await producer.start()
        verdicts = await abtest.evaluate(conn, abtest.Rules.from_settings(settings),
                                         _announcer(settings, producer))
    finally:
        await producer.stop()
        await conn.close()
    for verdict in verdicts:
        print(f"{verdict.test_id} {verdict.status:<9} improvement={verdict.improvement_percent}% "
              f"p={verdict.p_value} {verdict.conclusion or ''}".rstrip())
    print(f"{len(verdicts)} running tests evaluated")
    return 0


async def cmd_notify(settings: Settings, args: argparse.Namespace) -> int:
    """Post improvement events to the Discord webhook; or show / release the outbox."""
    if args.status or args.release:
        return await _notify_admin(settings, args)
    if not settings.discord_webhook_url:
        log.info("notify.not_configured",
                 reason="CIE_DISCORD_WEBHOOK_URL is not set: no webhook, nothing to post")
        return 0
    stop = None if args.once else _stop_on_signals()
    await _require_schema(settings, stop)
    pool = await _pool(settings)
    webhook = Webhook(settings.discord_webhook_url, settings.notify_timeout_seconds)
    notifier = Notifier(pool, webhook, NotifierRules.from_settings(settings), settings.backoff())
    try:
        if stop is None:
            outcomes = await notifier.drain(settings.notify_poll_ms / 1000)
            log.info("notify.drained", **outcomes)
            return 0
        await _with_health(settings, "notify", lambda: notifier.progressed_at,
                           lambda: notifier.run(settings.notify_poll_ms / 1000, stop))
    finally:
        await webhook.close()
        await pool.close()
    return 0


async def _notify_admin(settings: Settings, args: argparse.Namespace) -> int:
    await _require_schema(settings)
    sql = queries("notifier")
    conn = await connect(settings.database_url)
    try:
        if args.release:
            released = await conn.fetch(sql["release_in_doubt"], args.release)
            for row in released:
                print(f"released {row['event_id']}: it will be posted")
            missing = set(args.release) - {row["event_id"] for row in released}
            for event_id in sorted(missing, key=str):
                print(f"not in doubt: {event_id}")
            return 0 if not missing else 1
        state = await conn.fetchrow(sql["outbox_state"], settings.notify_max_age_hours)
        assert state is not None
        print(f"pending {state['pending']}, refused {state['refused']}, "
              f"in doubt {state['in_doubt']}")
        for row in await conn.fetch(sql["unnotified"]):
            print(f"{row['state']:<8} {row['event_id']} {row['event_type']} "
                  f"{row['component_id']} attempts={row['notify_attempts']} "
                  f"{row['notify_error'] or ''}".rstrip())
    finally:
        await conn.close()
    return 0


def _collect_garbage_rarely() -> None:
    """A consumer allocates millions of short-lived objects (records, events, lines) that form
    no reference cycles and are freed by reference counting; at the default threshold (700
    allocations) the cycle collector ran every few messages and rescanned the batch held in
    memory. So collections are rarer, and everything loaded at start-up is set aside for good
    (figures: bench/README.md)."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


Beside = Callable[[asyncpg.Pool, asyncio.Event], Coroutine[Any, Any, None]]


async def _consume(
    settings: Settings,
    pipelines: dict[str, Pipeline],
    dead_letters: DeadLetters | None,
    stop: asyncio.Event,
    *,
    metrics_port: int,
    beside: Beside | None = None,
) -> None:
    """Run the consume loop until ``stop`` (SIGTERM/SIGINT), with the health port and
    ``beside`` task."""
    _collect_garbage_rarely()
    pool = await _pool(settings, staging_tables(list(pipelines.values())))
    consumer = make_consumer(settings)
    runner = Runner(settings, consumer, pool, dead_letters, pipelines)
    checks = health.Health(settings.database_url, consumer, lambda: runner.progressed_at,
                           settings.liveness_timeout_seconds)
    server = await _serve_health(settings, metrics_port, checks)
    await consumer.start()
    task = asyncio.create_task(beside(pool, stop)) if beside else None
    lag = LagMonitor(settings, settings.consumer_group, consumer.assignment,
                     settings.lag_refresh_seconds)
    lag_task = asyncio.create_task(lag.run(stop))
    try:
        await runner.run(stop)
    finally:
        stop.set()
        if task:
            await task
        await lag_task
        await consumer.stop()
        if server:
            await server.close()
        await pool.close()


async def _require_schema(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Refuse to run on a schema older than this code (SchemaBehind: one line, exit 1). A
    long-running command (``stop`` given) waits for a database that does not answer yet, as
    its writers would; a one-shot command fails and its Job retries."""
    delays = settings.backoff().delays()
    while True:
        try:
            conn = await connect(settings.database_url)
            try:
                await migrations.require_current(conn)
            finally:
                await conn.close()
            return
        except Exception as exc:
            if stop is None or stop.is_set() or faults.classify(exc) != "transient":
                raise
            log.warning("schema.check_waiting", error=faults.describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next(delays))


async def _pool(settings: Settings, init: ConnectionInit | None = None) -> asyncpg.Pool:
    return await create_pool(settings.database_url, init, max_size=settings.db_pool_size,
                             command_timeout=settings.db_command_timeout_seconds)


def _metrics_port(settings: Settings, command: str) -> int:
    if settings.metrics_port is not None:
        return settings.metrics_port
    return DEFAULT_METRICS_PORTS[command]


async def _serve_health(
    settings: Settings, port: int, checks: health.Health
) -> health.HealthServer | None:
    if not port:
        return None
    server = await health.serve(checks, settings.metrics_host, port)
    log.info("metrics.listening", host=settings.metrics_host, port=port)
    return server


async def _with_health(settings: Settings, command: str, progressed_at: Callable[[], float],
                       loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a long-running loop that reads no Kafka topic (the scheduler, the notifier) with its
    metrics and health port: alive while the loop turns, ready while the database answers."""
    checks = health.Health(settings.database_url, None, progressed_at,
                           settings.liveness_timeout_seconds)
    server = await _serve_health(settings, _metrics_port(settings, command), checks)
    try:
        await loop()
    finally:
        if server:
            await server.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    """`cie topics ensure`: every source topic and its dead-letter topic (one partition,
    which keeps a replay in order), created where missing; run it again and nothing changes."""
    sources = [topic.kafka_name(settings) for topic in (*topics.TOPICS, *topics.PUBLISHED)]
    dead_letters = [topic.dead_letter_name(settings) for topic in topics.TOPICS]
    created = await ensure_topics(settings, sources, partitions=args.partitions,
                                  replication_factor=args.replication_factor)
    created += await ensure_topics(settings, dead_letters, partitions=1,
                                   replication_factor=args.replication_factor, dead_letters=True)
    log.info("topics.ensured", created=created,
             existing=sorted(set(sources + dead_letters) - set(created)))
    return 0


def _dead_letter_topic(settings: Settings, name: str) -> str:
    """TOPIC as the user gave it: a topic's short name (fills) or its Kafka name."""
    source = topics.kafka_topic(settings, name) if name in topics.BY_NAME else name
    return settings.dead_letter_topic(source)


async def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "show":
        names = [args.topic] if args.topic else list(topics.BY_NAME)
        shown = 0
        for name in names:
            async for letter in replay.letters(settings, _dead_letter_topic(settings, name),
                                               since=args.since):
                if args.error_class in (None, letter.error_class):
                    print(letter.line())
                    shown += 1
        print(f"{shown} dead letters")
        return 0
    if not args.topic:
        raise SettingsError("cie dlq replay: name the topic whose dead letters to replay")
    report = await replay.replay(
        settings, _dead_letter_topic(settings, args.topic), error_class=args.error_class,
        until=args.until, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    for letter in report.replayed:
        print(f"{verb} {letter.line()}")
    for letter in report.not_replayable:
        print(f"skipped {letter.line()}")
    for letter in report.misaddressed:
        print(f"refused (names another source topic) {letter.line()}")
    print(f"{verb} {len(report.replayed)}; skipped {len(report.not_replayable)} cut to fit and "
          f"{report.other_class} of other classes; refused {len(report.misaddressed)} naming "
          "another topic"
          + ("" if args.dry_run else f"; progress kept in group "
             f"{replay.replay_group(settings, args.error_class)}"))
    return 0


async def cmd_contracts(settings: Settings, args: argparse.Namespace) -> int:
    schemas = {
        topic.kafka_name(settings): contract_schema(topic.contract)
        for topic in (*topics.TOPICS, *topics.PUBLISHED)
    }
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(schemas)) + b"\n")
    return 0


async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.demo import Loop, improvement_loop, run_demo

    counts = await run_demo(settings, minutes=args.minutes, symbols=args.symbols.split(","),
                            seed=args.seed)
    log.info("demo.done", **counts)
    if args.loop:
        loop = Loop(uuid.UUID(counts["task_id"]), uuid.UUID(counts["test_id"]))
        seen = await improvement_loop(settings, loop, within=args.loop)
        return 0 if len(seen) == 2 else 1
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
    migrate.set_defaults(run=cmd_migrate, needs=("database",))

    maintain = sub.add_parser(
        "maintain", help="refresh daily summaries and remove expired rows (plain PostgreSQL); "
        "run TimescaleDB's jobs that are overdue or failed (TimescaleDB)")
    maintain.add_argument("--batch-rows", type=int, default=10_000,
                          help="rows per delete or refresh batch (default 10000)")
    maintain.set_defaults(run=cmd_maintain, needs=("database",))

    archive = sub.add_parser(
        "archive", help="trade_outcomes and trade_fills months past the horizon (default: "
        "retention) to Parquet in S3 at CIE_ARCHIVE_URL, verified before retention may remove "
        "them")
    archive.add_argument("--status", action="store_true",
                         help="list the archived months, and rows past retention not yet gone")
    archive.add_argument("--restore", metavar="YYYY-MM", type=_month, default=None,
                         help="download a month's parts (verified) into --into")
    archive.add_argument("--table", dest="tables", action="append",
                         choices=["trade_outcomes", "trade_fills"],
                         help="--restore: this table only (repeatable; default both)")
    archive.add_argument("--into", type=Path, default=Path("."),
                         help="--restore: the directory to write into (default .)")
    archive.add_argument("--adopt", action="store_true",
                         help="record parts found in S3 that this database does not know (after "
                         "restoring the database to an earlier time) instead of refusing")
    archive.set_defaults(run=cmd_archive, needs=("database",))

    rollup_ = sub.add_parser(
        "rollup", help="recompute strategy_performance and model_performance where facts changed")
    rollup_.add_argument("--full", action="store_true",
                         help="recompute every period and model day (after changing a setting)")
    rollup_.set_defaults(run=cmd_rollup, needs=("database",))

    consume = sub.add_parser(
        "consume", help="run the ingest consumers until SIGTERM (metrics port 9108 unless "
        "CIE_METRICS_PORT is set)")
    consume.add_argument(
        "--pipelines", default="",
        help=f"comma-separated subset of {','.join(topics.BY_NAME)} (default: all)")
    consume.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="run N group members as N processes, one core each (metrics ports: the base "
        "port plus 0..N-1)")
    consume.set_defaults(run=cmd_consume, needs=("kafka", "database"))

    validate = sub.add_parser(
        "validate", help="backfill prediction outcomes and trade excursions (own group + sweep; "
        "metrics port 9109 unless CIE_METRICS_PORT is set)")
    validate.add_argument("--once", action="store_true",
                          help="drain the backlog with the sweep, then exit (no Kafka)")
    validate.set_defaults(run=cmd_validate, needs=("kafka", "database"))

    schedule = sub.add_parser(
        "schedule", help="run the optimization scheduler until SIGTERM: publish due tasks to "
        "optimization-tasks, retry or disable failed ones (metrics port 9110 unless "
        "CIE_METRICS_PORT is set)")
    schedule.add_argument("--partitions", type=int, default=6,
                          help="partitions of optimization-tasks if it must be created (6)")
    schedule.set_defaults(run=cmd_schedule, needs=("kafka", "database"))

    evaluate_ab = sub.add_parser(
        "evaluate-ab", help="evaluate every running A/B test once: refresh its metrics, "
        "conclude it when its duration is over (cie schedule does this every "
        "CIE_AB_EVALUATE_SECONDS)")
    evaluate_ab.set_defaults(run=cmd_evaluate_ab, needs=("kafka", "database"))

    notify = sub.add_parser(
        "notify", help="post improvement events to the Discord webhook CIE_DISCORD_WEBHOOK_URL "
        "until SIGTERM, each at most once (metrics port 9111 unless CIE_METRICS_PORT is set)")
    notify.add_argument("--once", action="store_true",
                        help="post what is waiting, then exit")
    notify.add_argument("--status", action="store_true",
                        help="count the events not notified; list those refused or in doubt")
    notify.add_argument("--release", nargs="+", type=uuid.UUID, metavar="EVENT_ID",
                        help="events in doubt that the channel shows were not posted: post them")
    notify.set_defaults(run=cmd_notify, needs=("database",))

    topics_ = sub.add_parser(
        "topics", help="ensure: create the source and dead-letter topics where missing "
        "(idempotent; clusters without Strimzi)")
    topics_.add_argument("action", nargs="?", choices=["ensure"], default="ensure")
    topics_.add_argument("--partitions", type=int, default=6,
                         help="partitions of each source topic (6); dead-letter topics get 1")
    topics_.add_argument("--replication-factor", type=int, default=None,
                         help="replicas (default: as many as brokers, at most 3)")
    topics_.set_defaults(run=cmd_topics, needs=("kafka",))

    dlq = sub.add_parser(
        "dlq", help="show dead letters (reason, source coordinates), or replay them to their "
        "source topic after a fix (once: progress kept in a consumer group)")
    dlq.add_argument("action", choices=["show", "replay"])
    dlq.add_argument("topic", nargs="?", default="",
                     help=f"source topic: {', '.join(topics.BY_NAME)} or a Kafka topic name "
                     "(show: default all)")
    dlq.add_argument("--class", dest="error_class", default=None,
                     help="only dead letters of this error class (e.g. LedgerError)")
    dlq.add_argument("--since", type=_utc_time, default=None,
                     help="show: dead-lettered at or after this ISO time")
    dlq.add_argument("--until", type=int, default=None,
                     help="replay: stop before this dead-letter offset")
    dlq.add_argument("--dry-run", action="store_true", help="replay: list, send nothing")
    dlq.set_defaults(run=cmd_dlq, needs=("kafka",))

    contracts = sub.add_parser("contracts", help="print every topic's contract as JSON Schema")
    contracts.set_defaults(run=cmd_contracts, needs=())

    demo = sub.add_parser("demo", help="produce a simulated trading session")
    demo.add_argument("--minutes", type=int, default=60, help="minutes of market data (60)")
    demo.add_argument("--symbols", default="AAPL,MSFT,NVDA,AMZN,TSLA")
    demo.add_argument("--seed", type=int, default=7, help="random seed (7)")
    demo.add_argument("--loop", type=float, default=0, metavar="SECONDS",
                      help="then play the optimization worker and wait (at most SECONDS) for "
                      "the session's task to complete and its A/B test to conclude (needs "
                      "cie consume and cie schedule running)")
    demo.set_defaults(run=cmd_demo, needs=("kafka",))
    return parser


def _month(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a month (YYYY-MM)") from None


def _utc_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _needs(args: argparse.Namespace) -> tuple[Need, ...]:
    """What the command talks to: only those settings are required. ``validate --once`` is a
    sweep of the database alone."""
    if args.command == "validate" and args.once:
        return ("database",)
    needs: tuple[Need, ...] = args.needs
    return needs


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if "kafka" in _needs(args):  # a broker that refuses us says why before anything starts
        await require_broker(settings)
    run: Command = args.run
    return await run(settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(needs=_needs(args))
        if unknown := topics.unknown_names(settings):
            known = ", ".join(topics.BY_NAME)
            raise SettingsError(f"{' '.join(unknown)}: no such topic ({known})")
    except CieError as exc:
        print(f"cie: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if getattr(args, "processes", 1) > 1:
        environments = processes.child_environments(
            os.environ, args.processes, _metrics_port(settings, args.command))
        return processes.run_children(processes.without_processes_option(argv), environments)
    try:
        return asyncio.run(_run(settings, args))
    except CieError as exc:
        log.error("command.failed", command=args.command, error=str(exc))
        return 1
    except (OSError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # a server that cannot be reached or refuses us: one line saying which, no traceback
        log.error("command.failed", command=args.command,
                  error=f"{type(exc).__name__}: {faults.describe(exc)}")
        return 1
    except KeyboardInterrupt:
        return 130
