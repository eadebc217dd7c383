"""What each `cie` command does, given its Settings and parsed arguments: thin calls into the
capability it runs (ingest, analytics, improvement, archive) and the service lifecycle
(consumers/platform/service.py). The exit status is the return value."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import msgspec
import structlog
from aiokafka import AIOKafkaProducer

from consumers import topics
from consumers.analytics import rollup, validator
from consumers.contracts.base import contract_schema
from consumers.contracts.registered import KINDS, Format, registered_schema
from consumers.errors import RegistryRefused, SettingsError
from consumers.improvement import abtest, outbox
from consumers.improvement.announce import Announcer
from consumers.improvement.discord import Webhook
from consumers.improvement.notifier import Notifier, NotifierSettings
from consumers.improvement.scheduler import Scheduler, SchedulerSettings
from consumers.ingest import lineage, replay
from consumers.ingest.kafka import (
    DeadLetters,
    ensure_topics,
    make_dead_letter_producer,
    make_producer,
    require_dead_letter_topics,
)
from consumers.ingest.pipelines.base import Pipeline
from consumers.ingest.service import consume_until_stopped
from consumers.platform import maintenance, migrations
from consumers.platform.db import Conn, connect
from consumers.platform.registry import RegistryClient
from consumers.platform.service import (
    metrics_port,
    open_pool,
    record_success,
    require_schema,
    stop_on_signals,
    with_health,
)
from consumers.platform.settings import Settings

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
    started = time.monotonic()
    await require_schema(settings)
    conn = await connect(settings.database_url)
    try:
        report = await maintenance.maintain(conn, batch_rows=args.batch_rows)
        await record_success(conn, "maintain", started)
    finally:
        await conn.close()
    log.info("maintain.done", timescaledb=report.timescaledb,
             summary_days_refreshed=report.summary_days_refreshed,
             rows_deleted=report.rows_deleted, jobs_run=report.jobs_run,
             ingest_rejections_forgotten=report.rejections_forgotten)
    return 0


async def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    """Months past the horizon to Parquet in S3 (verified); or --status; or --restore."""
    from consumers.archive import archiver, status
    from consumers.archive.store import Location, ObjectStore

    if args.restore:
        return await _archive_restore(settings, args)
    await require_schema(settings)
    conn = await connect(settings.database_url)
    try:
        if args.status:
            for line in await status.status_lines(conn):
                print(line)
            return 0
        store = ObjectStore(Location.parse(_archive_url(settings)))
        started = time.monotonic()
        parts = await archiver.archive(
            conn, store, archiver.ArchiveSettings.from_settings(settings, adopt=args.adopt))
        await record_success(conn, "archive", started)
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


async def cmd_rollup(settings: Settings, args: argparse.Namespace) -> int:
    await require_schema(settings)
    conn = await connect(settings.database_url)
    reader = (await connect(settings.database_replica_url)
              if settings.database_replica_url else None)
    started = time.monotonic()
    try:
        await rollup.rollup(conn, rollup.RollupSettings.from_settings(settings), reader=reader,
                            full=args.full)
        await record_success(conn, "rollup", started)
    finally:
        if reader:
            await reader.close()
        await conn.close()
    return 0


async def cmd_consume(settings: Settings, args: argparse.Namespace) -> int:
    pipelines = topics.pipelines(settings, args.pipelines.split(",") if args.pipelines else None)
    stop = stop_on_signals()
    await require_schema(settings, stop)
    await require_dead_letter_topics(settings, list(pipelines))
    producer = make_dead_letter_producer(settings)
    try:
        await producer.start()  # in the try: a start refused (an ACL, TLS) still closes it
        dead_letters = DeadLetters(producer, settings)
        await consume_until_stopped(settings, pipelines, dead_letters, stop,
                                    metrics_port=metrics_port(settings, "consume"))
    finally:
        await producer.stop()
    return 0


async def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    rules = validator.ValidatorSettings.from_settings(settings)
    if args.once:  # one sweep drains the backlog (a Job, a backfill, a benchmark)
        await require_schema(settings)
        pool = await open_pool(settings)
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
                pool, rollup.RollupSettings.from_settings(settings),
                every=settings.validator_rollup_seconds, stop=stop))
        await asyncio.gather(*tasks)

    stop = stop_on_signals()
    await require_schema(settings, stop)
    await consume_until_stopped(settings, pipelines, None, stop, beside=sweeper,
                                metrics_port=metrics_port(settings, "validate"))
    return 0


async def cmd_schedule(settings: Settings, args: argparse.Namespace) -> int:
    """The optimization scheduler: claim due tasks, publish their runs, settle failures."""
    stop = stop_on_signals()
    await require_schema(settings, stop)
    topic = topics.TASKS.kafka_name(settings)
    await ensure_topics(settings, [topic], partitions=args.partitions, replication_factor=None)
    pool = await open_pool(settings)
    producer = make_producer(settings)
    try:
        await producer.start()
        scheduler = Scheduler(pool, producer, topic, SchedulerSettings.from_settings(settings),
                              _announcer(settings, producer),
                              abtest.AbTestSettings.from_settings(settings),
                              settings.ab_evaluate_seconds)
        await with_health(settings, "schedule", lambda: scheduler.progressed_at,
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
    await require_schema(settings)
    conn = await connect(settings.database_url)
    producer = make_producer(settings)
    try:
        await producer.start()
        verdicts = await abtest.evaluate(conn, abtest.AbTestSettings.from_settings(settings),
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
    stop = None if args.once else stop_on_signals()
    await require_schema(settings, stop)
    pool = await open_pool(settings)
    webhook = Webhook(settings.discord_webhook_url, settings.notify_timeout_seconds)
    notifier = Notifier(pool, webhook, NotifierSettings.from_settings(settings), settings.backoff())
    try:
        if stop is None:
            outcomes = await notifier.drain(settings.notify_poll_ms / 1000)
            log.info("notify.drained", **outcomes)
            return 0
        await with_health(settings, "notify", lambda: notifier.progressed_at,
                          lambda: notifier.run(settings.notify_poll_ms / 1000, stop))
    finally:
        await webhook.close()
        await pool.close()
    return 0


async def _notify_admin(settings: Settings, args: argparse.Namespace) -> int:
    await require_schema(settings)
    conn = await connect(settings.database_url)
    try:
        if args.release:
            released, missing = await outbox.release(conn, args.release)
            for event_id in released:
                print(f"released {event_id}: it will be posted")
            for event_id in missing:
                print(f"not in doubt: {event_id}")
            return 0 if not missing else 1
        for line in await outbox.status_lines(conn, settings.notify_max_age_hours):
            print(line)
    finally:
        await conn.close()
    return 0


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
        until=args.until, dry_run=args.dry_run, from_beginning=args.from_beginning)
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


async def cmd_trace(settings: Settings, args: argparse.Namespace) -> int:
    await require_schema(settings)
    conn = await connect(settings.database_url)
    try:
        found = await lineage.trace(conn, args.id)
    finally:
        await conn.close()
    if found is None:
        print(f"{args.id}: no stored fill or trade has this id")
        return 1
    if not args.no_kafka:
        await lineage.read_records(settings, found.fills)
    print(msgspec.json.format(msgspec.json.encode(found)).decode())
    return 0


async def cmd_contracts(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "register":
        return await _register_contracts(settings, args.format, args.compatibility)
    schemas = {
        topic.kafka_name(settings): contract_schema(topic.contract)
        for topic in (*topics.TOPICS, *topics.PUBLISHED)
    }
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(schemas)) + b"\n")
    return 0


async def _register_contracts(settings: Settings, fmt: Format, compatibility: str) -> int:
    """Each consumed topic's contract under ``<topic>-value``, its compatibility set first
    (so the registry checks this version against the last); one JSON line a topic."""
    if not settings.schema_registry_url:
        raise SettingsError("CIE_SCHEMA_REGISTRY_URL: required by `cie contracts register`")
    client = RegistryClient(settings.schema_registry_url,
                            settings.schema_registry_timeout_seconds)
    refused = 0
    try:
        for topic in topics.TOPICS:
            subject = f"{topic.kafka_name(settings)}-value"
            text = registered_schema(fmt, topic.contract)
            try:
                await client.set_compatibility(subject, compatibility)
                rule_set = True
            except RegistryRefused:  # Apicurio: no rule on a subject not registered yet
                rule_set = False
            try:
                schema_id = await client.register(subject, KINDS[fmt], text)
                if not rule_set:
                    await client.set_compatibility(subject, compatibility)
            except RegistryRefused as exc:
                refused += 1
                print(json.dumps({"subject": subject, "format": fmt,
                                  "refused": _name_avro_fields(str(exc), text)}))
                continue
            print(json.dumps({"subject": subject, "format": fmt, "id": schema_id,
                              "compatibility": compatibility}))
    finally:
        await client.close()
    return 1 if refused else 0


def _name_avro_fields(reason: str, schema_text: str) -> str:
    """The registry's reason with each ``/fields/N`` it points at named (``/fields/6
    (volume)``); Apicurio's reasons number the fields."""
    try:
        fields = json.loads(schema_text).get("fields", [])
    except (ValueError, AttributeError):  # a union of records, or JSON Schema
        return reason

    def named(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return f"{match.group(0)} ({fields[number]['name']})" if number < len(fields) \
            else match.group(0)

    return re.sub(r"/fields/(\d+)", named, reason)


async def cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.cli.reference import render

    sys.stdout.write(render())
    return 0


async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.contracts.encoding import Encoding
    from consumers.demo import Loop, improvement_loop, run_demo

    counts = await run_demo(settings, minutes=args.minutes, symbols=args.symbols.split(","),
                            seed=args.seed, encoding=Encoding(args.encoding))
    log.info("demo.done", **counts)
    if args.loop:
        loop = Loop(uuid.UUID(counts["task_id"]), uuid.UUID(counts["test_id"]))
        seen = await improvement_loop(settings, loop, within=args.loop)
        return 0 if len(seen) == 2 else 1
    return 0
