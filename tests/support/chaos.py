"""The chaos scenario: a simulated session through `cie consume` while it is being broken.

Used by tests/integration/test_chaos.py (a short run in CI) and bench/chaos.py (the full run,
200,000+ events). Everything runs on servers of its own (a private Kafka broker and a private
PostgreSQL cluster), because the scenario stops and restarts them.

1. A demo session (bars, predictions, fills, improvement events) with 1 % poison messages
   (deep nesting, not JSON, NaN, a decimal of a million digits, invalid UTF-8, a tombstone, a
   bar from the future, a 1 MB value) is produced, paced, across the four topics.
2. Meanwhile the consumer is SIGKILLed ``kills`` times (and restarted, like Kubernetes would),
   PostgreSQL is restarted once, the broker is restarted once, and a second member joins and
   leaves the group while PostgreSQL is down.
3. When the group has committed every offset, the consumer must stop cleanly; the validator
   and the rollup run once.
4. A clean run reads the same topics into a second database (its own group, no faults), and
   its validator and rollup run too.
Checks: rows = distinct valid events; each poison message is in its dead-letter topic exactly
once and nothing else is; every table, derived columns included (trades, prediction
outcomes, rollups), equals the clean run's; every fill's source is the record the clean run
stored it from; no process was stuck or died on its own. Reported: how many messages the
restarted consumers read again and skipped as written (ingest_positions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.demo import session
from consumers.ingest.kafka import (
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
    ensure_topics,
    make_producer,
)
from consumers.platform.settings import load_settings
from consumers.producer import encode, route
from tests.support.cie import cie_environment
from tests.support.private_kafka import PrivateKafka
from tests.support.private_postgres import PrivatePostgres
from tests.support.topic_reading import read_to_end

TOPICS = ("bars", "predictions", "fills", "improvement-events")
PARTITIONS = 4

# Columns whose value is the time of writing, not a fact: left out of the comparison
# (event_timestamp defaults to the time of writing when an event leaves it out).
WRITE_TIMES = {"id", "created_at", "updated_at", "validated_at", "applied_at", "computed_at",
               "event_timestamp"}
COMPARED_TABLES = ("market_conditions", "model_predictions", "trade_fills", "trade_outcomes",
                   "improvement_events", "ab_tests", "optimization_queue", "model_performance",
                   "strategy_performance", "market_daily_summary")


def poison_values(now: datetime) -> list[bytes | None]:
    """The hostile kinds of the fault-tolerance issue, one message each."""
    future = (now + timedelta(days=3)).isoformat()
    return [
        b'{"symbol": "X", "nested": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        b"{not json",
        b'{"symbol": "X", "open": NaN}',
        b'{"symbol": "X", "close": 1e999999}',
        b'{"symbol": "\xff\xfe"}',
        None,  # a tombstone
        json.dumps({"symbol": "FUT", "timestamp": future, "open": 1, "high": 1, "low": 1,
                    "close": 1, "volume": 1}).encode(),
        b'{"pad": "' + b"x" * 1_000_000 + b'"}',  # near the broker's limit: cut in the DLQ
    ]


@dataclass
class Plan:
    symbols: int = 10
    minutes: int = 120
    kills: int = 2
    produce_seconds: float = 40.0
    poison_every: int = 100  # 1 %
    timescaledb: bool = False
    seed: int = 11


@dataclass
class Report:
    events: int = 0
    poison: int = 0
    dead_letters: int = 0
    kills: int = 0
    unexpected_exits: int = 0
    drain_seconds: float = 0.0
    seconds: float = 0.0
    # read again after a kill or a rebalance and skipped, their rows being stored already
    replayed_skipped: int = 0
    problems: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class Member:
    """`cie consume` as a real process, restarted when it dies (as Kubernetes would)."""

    def __init__(self, environment: dict[str, str], log: Path, report: Report) -> None:
        self._environment = environment
        self._log = log
        self._report = report
        self.proc: asyncio.subprocess.Process | None = None
        self._intended: list[asyncio.subprocess.Process] = []  # killed or stopped on purpose
        self._started = 0.0

    async def start(self) -> None:
        self._started = time.monotonic()
        sink = self._log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "consume",
            env=cie_environment(self._environment), stdout=sink, stderr=sink)
        sink.close()

    async def kill(self) -> None:
        proc = self.proc
        assert proc is not None
        self._intended.append(proc)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        self._report.kills += 1
        await self.start()

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit in time (stuck)."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        # A process still importing has no SIGTERM handler yet (and nothing to drain): give
        # a just-restarted one time to start, so the drain itself is what is checked.
        await asyncio.sleep(max(0.0, self._started + 10 - time.monotonic()))
        self._intended.append(self.proc)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None

    async def supervise(self) -> None:
        """Restart the process whenever it exits by itself (counted: it should not)."""
        while True:
            proc = self.proc
            assert proc is not None
            await proc.wait()
            if proc in self._intended:
                while self.proc is proc:  # kill() starts the next one
                    await asyncio.sleep(0.05)
                continue
            self._report.unexpected_exits += 1
            await self.start()


def environment(kafka: str, url: str, group: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka, "DATABASE_URL": url, "CIE_CONSUMER_GROUP": group,
        "CIE_TOPIC_IMPROVEMENTS": "improvement-events", "CIE_METRICS_PORT": "0",
        "CIE_BATCH_MAX_ROWS": "500", "CIE_BATCH_MAX_LATENCY_MS": "100",
        "CIE_DRAIN_DEADLINE_SECONDS": "5", "CIE_RETRY_BACKOFF_MAX_MS": "1000",
        "CIE_LOG_FORMAT": "json", **extra,
    }


def messages(plan: Plan, now: datetime) -> tuple[list[tuple[str, bytes, bytes | None]], int]:
    """(topic, key, value) in production order, and how many are poison."""
    rng = random.Random(plan.seed)
    # the session ends a day ago: every event time is in the past, whatever its length
    start = (now - timedelta(days=1, minutes=plan.minutes)).replace(second=0, microsecond=0)
    symbols = [f"C{i:03d}" for i in range(plan.symbols)]
    kafka = load_settings({"KAFKA_BOOTSTRAP_SERVERS": "-", "DATABASE_URL": "postgresql://-",
                           "CIE_TOPIC_IMPROVEMENTS": "improvement-events"})
    out: list[tuple[str, bytes, bytes | None]] = []
    poison = poison_values(now)
    count = 0
    for event in session(rng, start=start, minutes=plan.minutes, symbols=symbols):
        topic, key = route(kafka, event)
        out.append((topic, key, encode(event)))
        if len(out) % plan.poison_every == plan.poison_every - 1:
            out.append((TOPICS[count % len(TOPICS)], f"poison-{count}".encode(),
                        poison[count % len(poison)]))
            count += 1
    return out, count


async def produce(kafka: str, batch: list[tuple[str, bytes, bytes | None]],
                  seconds: float) -> None:
    """Paced over ``seconds``; a send that fails (the broker restarting) is sent again."""
    settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": kafka, "DATABASE_URL": "postgresql://-"})
    producer = make_producer(settings, request_timeout_ms=60_000, max_request_size=1_100_000)
    await producer.start()
    try:
        chunk = max(1, len(batch) // max(1, int(seconds * 10)))
        started = time.monotonic()
        for i in range(0, len(batch), chunk):
            part = batch[i:i + chunk]
            while part:
                futures = [await producer.send(t, key=k, value=v) for t, k, v in part]
                results = await asyncio.gather(*futures, return_exceptions=True)
                part = [m for m, r in zip(part, results, strict=True) if isinstance(r, Exception)]
                if part:
                    await asyncio.sleep(1)
            ahead = started + seconds * (i + chunk) / len(batch) - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def caught_up(kafka: str, group: str, timeout: float) -> bool:
    """True once the group's committed offsets reach every partition's end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = [tp for tp in partitions if (await consumer.committed(tp) or 0) < ends[tp]]
            if not behind:
                return True
            await asyncio.sleep(1)
        return False
    finally:
        await consumer.stop()


async def read_all(kafka: str, topics: list[str]) -> list[Any]:
    """Every committed record of ``topics``, read to their end offsets."""
    partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    return await read_to_end(kafka, partitions, timeout=120, fetch_max_bytes=4 * 1024 * 1024)


async def run_command(env: dict[str, str], *args: str, log: Path, timeout: float = 300) -> int:
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", *args, env=cie_environment(env),
            stdout=sink, stderr=sink)
        return await asyncio.wait_for(proc.wait(), timeout)


async def snapshot(url: str) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every compared table as a multiset of rows, write times left out."""
    conn = await asyncpg.connect(url)
    try:
        tables = {}
        for table in COMPARED_TABLES:
            columns = [r["column_name"] for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = $1 "
                "ORDER BY ordinal_position", table) if r["column_name"] not in WRITE_TIMES]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = await conn.fetch(f"SELECT {listed} FROM {table}")
            tables[table] = Counter(tuple(str(v) for v in row.values()) for row in rows)
        return tables
    finally:
        await conn.close()


async def _faults(plan: Plan, kafka: PrivateKafka, pg: PrivatePostgres, member: Member,
                  extra: dict[str, str], log: Path, report: Report) -> None:
    steps: list[Callable[[], Awaitable[None]]] = [member.kill for _ in range(plan.kills)]

    async def restart_postgres() -> None:
        await pg.stop()
        await asyncio.sleep(3)
        await pg.start()

    async def restart_broker() -> None:
        await kafka.stop()
        await asyncio.sleep(3)
        await kafka.start()

    async def member_joins_and_leaves_in_an_outage() -> None:
        await pg.stop()
        try:
            second = Member(extra, log, report)
            await second.start()
            await asyncio.sleep(12)  # joins; the old member's revocation gives up at 5 s
            await second.stop(timeout=30)
        finally:
            await pg.start()

    steps[1:1] = [restart_postgres]
    steps[len(steps) // 2:len(steps) // 2] = [restart_broker]
    steps.insert(len(steps) - 1, member_joins_and_leaves_in_an_outage)
    pause = plan.produce_seconds / (len(steps) + 1)
    for step in steps:
        await asyncio.sleep(pause)
        await step()


async def run(plan: Plan, workdir: Path) -> Report:
    report = Report()
    started = time.monotonic()
    kafka, pg = PrivateKafka(), PrivatePostgres(timescaledb=plan.timescaledb)
    await pg.init()
    await pg.start()
    await kafka.start()
    try:
        await _run(plan, workdir, kafka, pg, report)
    finally:
        await kafka.destroy()
        await pg.destroy()
    report.seconds = round(time.monotonic() - started, 1)
    return report


async def _run(plan: Plan, workdir: Path, kafka: PrivateKafka, pg: PrivatePostgres,
               report: Report) -> None:
    url, clean_url = await pg.migrated("chaos"), await pg.migrated("clean")
    env = environment(kafka.bootstrap, url, "chaos")
    settings = load_settings(env)
    await ensure_topics(settings, [*TOPICS, *(f"{t}.dlq" for t in TOPICS)],
                        partitions=PARTITIONS, replication_factor=1)
    now = datetime.now(UTC)
    batch, report.poison = messages(plan, now)
    report.events = len(batch)
    log = workdir / "consume.log"

    member = Member(env, log, report)
    await member.start()
    supervisor = asyncio.create_task(member.supervise())
    try:
        await asyncio.gather(
            produce(kafka.bootstrap, batch, plan.produce_seconds),
            _faults(plan, kafka, pg, member, env, log, report))
        if not await caught_up(kafka.bootstrap, "chaos", timeout=180):
            report.problems.append("the group did not commit every offset within 180 s (stuck)")
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        drain = time.monotonic()
        code = await member.stop(timeout=30)
        report.drain_seconds = round(time.monotonic() - drain, 1)
    if code != 0:
        report.problems.append(f"the consumer did not stop cleanly on SIGTERM (exit {code})")
    if report.unexpected_exits:
        report.problems.append(f"the consumer died by itself {report.unexpected_exits} times")

    await _check_dead_letters(kafka.bootstrap, report)
    await _check_rows(url, batch, report)
    await _clean_run(kafka.bootstrap, clean_url, workdir, report)
    for target, name in ((url, "chaos"), (clean_url, "clean")):
        target_env = environment(kafka.bootstrap, target, name)
        for command in (("validate", "--once"), ("rollup",), ("maintain",)):
            if await run_command(target_env, *command, log=workdir / f"{name}.log") != 0:
                report.problems.append(f"cie {' '.join(command)} failed on the {name} run")
    report.replayed_skipped = skipped_as_written(log)
    chaos, clean = await snapshot(url), await snapshot(clean_url)
    report.tables = {table: sum(rows.values()) for table, rows in chaos.items()}
    chaos_sources, clean_sources = await fill_sources(url), await fill_sources(clean_url)
    if chaos_sources != clean_sources or len(chaos_sources) != report.tables["trade_fills"]:
        report.problems.append(
            f"lineage: {len(chaos_sources)} fills with their source after chaos of "
            f"{report.tables['trade_fills']}, {len(clean_sources)} in the clean run, "
            f"{len(chaos_sources - clean_sources)} naming another record")
    for table in COMPARED_TABLES:
        if chaos[table] != clean[table]:
            only_chaos = sum((chaos[table] - clean[table]).values())
            only_clean = sum((clean[table] - chaos[table]).values())
            report.problems.append(f"{table}: {only_chaos} rows only after chaos, "
                                   f"{only_clean} only in the clean run")


def skipped_as_written(log: Path) -> int:
    """Messages the consumers read again and skipped (their log's ``skipped_as_written``)."""
    total = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "skipped_as_written" in line:
            total += int(json.loads(line).get("skipped_as_written", 0))
    return total


async def fill_sources(url: str) -> set[tuple[Any, ...]]:
    """Each stored fill with the Kafka record it came in: the same in any run of a topic."""
    conn = await asyncpg.connect(url)
    try:
        return {tuple(r) for r in await conn.fetch(
            "SELECT f.fill_id, s.topic, s.kafka_partition, s.kafka_offset FROM trade_fills f "
            "JOIN trade_fill_sources s USING (fill_id, filled_at)")}
    finally:
        await conn.close()


async def _clean_run(kafka: str, url: str, workdir: Path, report: Report) -> None:
    env = environment(kafka, url, "clean", CIE_DEAD_LETTER_SUFFIX=".clean-dlq")
    member = Member(env, workdir / "clean.log", report)
    await member.start()
    try:
        if not await caught_up(kafka, "clean", timeout=300):
            report.problems.append("the clean run did not catch up within 300 s")
    finally:
        await member.stop(timeout=30)


async def _check_dead_letters(kafka: str, report: Report) -> None:
    sources = await read_all(kafka, list(TOPICS))
    poison = {(r.topic, r.partition, r.offset) for r in sources
              if r.key and r.key.startswith(b"poison-")}
    letters = await read_all(kafka, [f"{t}.dlq" for t in TOPICS])
    report.dead_letters = len(letters)
    coordinates = Counter(
        (h[DLQ_TOPIC].decode(), int(h[DLQ_PARTITION]), int(h[DLQ_OFFSET]))
        for h in (dict(r.headers) for r in letters))
    twice = [c for c, n in coordinates.items() if n > 1]
    if twice:
        report.problems.append(f"{len(twice)} messages dead-lettered more than once")
    if set(coordinates) != poison:
        report.problems.append(
            f"dead letters differ from the poison: {len(poison - set(coordinates))} poison "
            f"messages missing, {len(set(coordinates) - poison)} valid messages dead-lettered")


async def _check_rows(url: str, batch: list[tuple[str, bytes, bytes | None]],
                      report: Report) -> None:
    valid = [json.loads(v) for t, k, v in batch if v is not None and not k.startswith(b"poison-")]
    expected = {
        "market_conditions": len({(e["symbol"], e["timestamp"]) for e in valid if "open" in e}),
        "model_predictions": len({e["prediction_id"] for e in valid if "prediction_id" in e}),
        "trade_fills": len({e["fill_id"] for e in valid if "fill_id" in e}),
    }
    conn = await asyncpg.connect(url)
    try:
        for table, count in expected.items():
            stored = await conn.fetchval(f"SELECT count(*) FROM {table}")
            if stored != count:
                report.problems.append(f"{table}: {stored} rows for {count} distinct events")
    finally:
        await conn.close()


