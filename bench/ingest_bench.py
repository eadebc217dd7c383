r"""End-to-end ingest benchmark, reported against raw limits measured in the same run.

    deploy/local/stack.sh up
    .venv/bin/python bench/ingest_bench.py [--bars 100000] [--fills 40000] [--cases bars,fills]
        [--batch-sizes 100,1000,10000] [--processes 1,2] [--timescaledb]

For bars and for fills it measures, on the local stack:
- the server's own COPY limit, the reference every ratio is given against: ``psql \copy`` of
  the same rows pre-rendered as COPY text into the same indexed table, one ``\copy`` (one
  transaction) per batch; the client does nothing but send bytes;
- the raw asyncpg limit: asyncpg binary COPY of the same rows into the same table, one
  transaction per batch (no staging, no upsert, no decoding): what a Python client pays;
- the raw Kafka limit: aiokafka ``getmany`` plus msgspec decoding, no database;
  for fills the server's COPY holds the fills and their derived trade rows (derived
  beforehand), one transaction per batch: the least any fills writer must store;
- end to end: ``cie consume`` as a real process draining the pre-produced topic, at batch sizes
  100 / 1,000 / 10,000 (events/s from its own flush log, peak RSS from /proc);
- scale-out: ``cie consume --processes N`` for each N, at the largest batch size,
  counted once every member has joined the group;
- latency: with a consumer running (1,000-row batches), events produced at half the measured
  1,000-row rate for a while; event-to-commit latency = the time the flush that carried the
  event logged its commit minus the time the event was sent, and minus the time the broker
  appended it (the consumer's part; the producer here shares the cores, see ``latency``).
The machine is shared and noisy: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import cpu  # bench/cpu.py, beside this script
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from consumers.demo import Market
from consumers.ingest import trades
from consumers.ingest.kafka import client_options, ensure_topics, make_producer, topic_config
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.fills import FILL_COLUMNS, OUTCOME_COLUMNS, FillsPipeline
from consumers.platform import migrations
from consumers.platform.db import copy_line
from consumers.platform.settings import Settings, load_settings
from consumers.producer import EventProducer, encode, route

PARTITIONS = 4
COMPRESSION = "lz4"  # as the producers' topics are: the consumer decompresses every batch
PRODUCE_TICK = 0.01  # the latency run hands its due records over every 10 ms
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def make_bars(n: int) -> list[Bar]:
    """Bars as the producers send them: each of 50 symbols' random walk and indicators
    (consumers.demo.Market), every value varied at its column's full precision. (Until
    2026-12-07 only close and volume varied and the indicators were short constants, and the
    consumer's share of the server's COPY looked larger than it is.)"""
    rng = random.Random(1)  # benchmark data, not cryptography
    symbols = [f"S{i:03d}" for i in range(50)]
    markets = {symbol: Market(price=rng.uniform(20, 900)) for symbol in symbols}
    return [markets[symbols[i % 50]].step(rng, symbols[i % 50], T0 + timedelta(minutes=i // 50))
            for i in range(n)]


def make_fills(n: int) -> list[Fill]:
    """Trades of four fills each, two opening and two closing, with values as a trading
    service sends them: prices at their full eight places around a price of its own per
    trade, commissions at four, quantities, slippage and submission latencies all varied
    (seeded: every run sends the same fills)."""
    rng = random.Random(43)
    out = []
    for t in range(n // 4):
        trade = uuid.uuid4()
        at = T0 + timedelta(seconds=t)
        base = rng.randint(2_000_000_000, 90_000_000_000)  # 20.00000000 to 900.00000000
        opening, closing = ("BUY", "SELL") if rng.random() < 0.5 else ("SELL", "BUY")
        lots = [rng.randint(1, 500), rng.randint(1, 500)]
        first_close = rng.randint(1, sum(lots) - 1) if sum(lots) > 1 else 0
        closes = [q for q in (first_close, sum(lots) - first_close) if q]
        for k, (side, qty) in enumerate([(opening, q) for q in lots] +
                                        [(closing, q) for q in closes]):
            price = Decimal(base + rng.randint(-5_000_000, 5_000_000)).scaleb(-8)
            filled_at = at + timedelta(microseconds=rng.randint(1, 999) + 1_000 * k)
            out.append(Fill(
                fill_id=uuid.uuid4(), trade_id=trade, strategy_id=f"strat-{t % 20}",
                model_version="v1", symbol=f"S{t % 50:03d}", side=side,  # type: ignore[arg-type]
                quantity=qty, price=price,
                commission=Decimal(rng.randint(0, 2_500_000)).scaleb(-4),
                intended_price=price + Decimal(rng.randint(-20_000, 20_000)).scaleb(-8),
                filled_at=filled_at,
                order_submitted_at=filled_at - timedelta(microseconds=rng.randint(500, 400_000))))
    return out


async def median_ms(step: Callable[[], Awaitable[Any]], runs: int = 5) -> float:
    """The median of ``runs`` timings of ``step``, in ms."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        await step()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def drop_database(settings: Settings, name: str) -> None:
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_database(settings: Settings, name: str, timescaledb: bool = False) -> str:
    await drop_database(settings, name)
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn, use_timescaledb=timescaledb)
    finally:
        await conn.close()
    return url


async def produce(settings: Settings, name: str, events: Sequence[Any]) -> str:
    topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic, f"{topic}.dlq"], partitions=PARTITIONS,
                        replication_factor=1)
    routed = msgspec.structs.replace(settings, topic_names={**settings.topic_names, name: topic})
    producer = make_producer(routed, linger_ms=20, max_batch_size=1 << 20,
                             compression_type=COMPRESSION)
    await producer.start()
    try:
        typed = EventProducer(producer, routed)
        futures = [await typed.send(event) for event in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


async def kafka_limit(settings: Settings, topic: str, n: int, decoder: Any) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = 0
        started = None
        deadline = time.monotonic() + 300
        while seen < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if batches and started is None:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    decoder.decode(record.value)
                seen += len(records)
        assert started is not None and seen == n, f"read {seen} of {n}"
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def copy_limit(url: str, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                     batch: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {table}")
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=rows[i:i + batch],
                                                 columns=columns)
        rate = len(rows) / (time.perf_counter() - started)
        await conn.execute(f"TRUNCATE {table}")
        return rate
    finally:
        await conn.close()


CopyBatch = list[tuple[str, Sequence[str], list[str]]]  # (table, columns, COPY text lines)
CopyBatches = Callable[[int], list[CopyBatch]]  # a case's reference batches for a batch size


def reference_batches(name: str, table: str, columns: Sequence[str], events: list[Any],
                      rows: list[tuple[Any, ...]], batch: int) -> list[CopyBatch]:
    """What the server's COPY reference stores of a case (fills: with their trade rows)."""
    if name == "fills":
        return fills_with_trades_batches(events, batch)
    return copy_batches(table, columns, rows, batch)


def server_copy_limit(url: str, batches: list[CopyBatch], rows: int, workdir: Path) -> float:
    """``psql \\copy`` of pre-rendered COPY text, one transaction per batch (its tables in
    order): the server's own rate, with a client that only sends bytes and no rollup marks.
    Rows per second of ``rows`` (the events the batches hold)."""
    tables = sorted({table for batch in batches for table, _, _ in batch})
    # no per-row rollup marks (schema/18): the consumer's fills writer marks once per flush
    script = ["SET cie.writer_marks_rollup = 'on';"]
    for i, batch in enumerate(batches):
        script.append("BEGIN;")
        for table, columns, lines in batch:
            chunk = workdir / f"{table}-{i}.copy"
            chunk.write_text("".join(lines))
            script.append(f"\\copy {table} ({', '.join(columns)}) FROM '{chunk}'")
        script.append("COMMIT;")
    (workdir / "copy.psql").write_text("\n".join(script) + "\n")
    psql = [shutil.which("psql") or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url]
    truncate = [*psql, "-c", f"TRUNCATE {', '.join(tables)}"]
    subprocess.run(truncate, check=True)
    started = time.perf_counter()
    subprocess.run([*psql, "-f", str(workdir / "copy.psql")], check=True)
    rate = rows / (time.perf_counter() - started)
    subprocess.run(truncate, check=True)
    for chunk in workdir.glob("*.copy"):
        chunk.unlink()
    return rate


def copy_batches(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                 batch: int) -> list[CopyBatch]:
    lines = [copy_line(row) for row in rows]
    return [[(table, columns, lines[i:i + batch])] for i in range(0, len(lines), batch)]


def fills_with_trades_batches(fills: list[Fill], batch: int) -> list[CopyBatch]:
    """Each batch's fills and its trades' derived rows (derived beforehand): the least any
    fills writer must store, since a trade row is kept for every trade. The benchmark's
    trades never span two batches."""
    out: list[CopyBatch] = []
    for i in range(0, len(fills), batch):
        chunk = fills[i:i + batch]
        ledgers: dict[uuid.UUID, list[Fill]] = {}
        for f in chunk:
            ledgers.setdefault(f.trade_id, []).append(f)
        outcomes = [trades.derive(ledger) for ledger in ledgers.values()]
        out.append([
            ("trade_fills", FILL_COLUMNS, [copy_line(msgspec.structs.astuple(f)) for f in chunk]),
            ("trade_outcomes", OUTCOME_COLUMNS,
             [copy_line(tuple(getattr(o, c) for c in OUTCOME_COLUMNS)) for o in outcomes])])
    return out


async def truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # the pending-marks tables exist on one schema path or the other
        await conn.execute("TRUNCATE market_conditions, trade_fills, trade_fill_sources, "
                           "trade_outcomes")
        for marks in ("market_daily_summary_pending", "rollup_pending"):
            if await conn.fetchval("SELECT to_regclass($1)", marks) is not None:
                await conn.execute(f"TRUNCATE {marks}")
    finally:
        await conn.close()


class Consumer:
    """`cie consume` as a real process, with its JSON log in a file."""

    def __init__(self, settings: Settings, url: str, env: dict[str, str], log: Path,
                 processes: int = 1) -> None:
        self.log = log
        self.processes = processes
        self.env = {
            **os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": url, "CIE_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
            "CIE_METRICS_PORT": "0", "CIE_LOG_FORMAT": "json", **env}
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_rss_mb = 0.0
        self.costs: list[cpu.Sample] = []

    async def __aenter__(self) -> Consumer:
        self._sink = self.log.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "consume", "--processes", str(self.processes),
            env=self.env,
            stdout=self._sink, stderr=self._sink)
        return self

    def sample_rss(self) -> None:
        """Peak RSS of the process, or of its largest child with --processes."""
        assert self.proc is not None
        for pid in cpu.with_children(self.proc.pid):
            self.peak_rss_mb = max(self.peak_rss_mb, cpu.status_kib(pid, "VmHWM") / 1024)

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), timeout=60)
        self._sink.close()



def log_events(log: Path, name: str) -> list[dict[str, Any]]:
    """The ``name`` events of a consumer's JSON log (of all its processes), in time order."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return sorted((e for e in events if e.get("event") == name), key=stamp)


def flushes(log: Path) -> list[dict[str, Any]]:
    return log_events(log, "batch.flushed")


def steady_rate(log: Path) -> float:
    """Messages per second flushed while every member was at work: from the last partition
    assignment before a member ran dry (with several members, the first joiner's head start
    and the rebalance the others' joining causes are left out) until the first partition ran
    dry (after it, a member may idle while another finishes)."""
    # a member that has drained its partitions exits, and the rebalance hands them to another
    drained = [stamp(e) for e in log_events(log, "consume.drained")] or [float("inf")]
    settled = max(stamp(e) for e in log_events(log, "partitions.assigned")
                  if stamp(e) < drained[0])
    done = [f for f in flushes(log) if stamp(f) - f["seconds"] >= settled]
    if not done:
        raise SystemExit(f"{log}: the topic was drained before every member had joined; "
                         "produce more events (--bars, --fills)")
    last_of: dict[str, float] = {}
    for flush in done:
        for partition in flush["partitions"]:
            last_of[partition] = stamp(flush)
    dry = min(last_of.values())
    counted = [f for f in done if stamp(f) <= dry]
    started = min(settled, stamp(counted[0]) - float(counted[0]["seconds"]))
    messages: int = sum(f["messages"] for f in counted)
    return messages / (dry - started)


async def wait_rows(url: str, table: str, n: int, consumer: Consumer, timeout: float) -> None:
    """Until ``table`` holds ``n`` rows, noting what they cost as they arrive (cpu.py)."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            consumer.sample_rss()
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            wal = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'")
            assert consumer.proc is not None
            consumer.costs.append(cpu.sample(rows, consumer.proc.pid, int(wal)))
            if rows >= n:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{table} did not reach {n} rows")
    finally:
        await conn.close()


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


async def end_to_end(settings: Settings, url: str, topic_env: dict[str, str], table: str,
                     n: int, batch: int, log: Path,
                     processes: int = 1) -> tuple[float, float, cpu.Cost | None]:
    await truncate(url)
    env = {**topic_env, "CIE_BATCH_MAX_ROWS": str(batch), "CIE_BATCH_MAX_LATENCY_MS": "1000",
           # members learn of a rebalance at their next heartbeat: join in a fraction of the run
           "CIE_KAFKA_HEARTBEAT_INTERVAL_MS": "300"}
    async with Consumer(settings, url, env, log, processes) as consumer:
        await wait_rows(url, table, n, consumer, timeout=600)
    return steady_rate(log), consumer.peak_rss_mb, cpu.steady_cost(consumer.costs, n)


class Latency(msgspec.Struct, frozen=True):
    p50_ms: float  # from the time the event was due to the flush's commit
    p99_ms: float
    broker_p50_ms: float  # from the broker's append to the flush's commit: the consumer's part
    broker_p99_ms: float
    events: int
    producer_kept_per_s: float
    producer_cores: float  # this process's CPU while it produced, in cores: not the consumer's


async def latency(settings: Settings, url: str, name: str, events: Sequence[Any],
                  rate: float, seconds: float, log: Path) -> Latency:
    """Event-to-commit latency at ``rate`` events/s, 1,000-row batches, and the rate the
    producer (in this process, on the same cores) actually kept.

    Measured from two starts: the time the event was due (the run's start + its index /
    ``rate``), and the broker's append (the topic stamps LogAppendTime); the difference is
    the event's time in this process's producer (waiting for its 10 ms tick included). The
    producer shares the cores of the consumer, broker and server (``producer_cores``), so
    every tick it hands the due events over pre-encoded, a batch per partition
    (``send_batches``): with ``send()`` per event it took 0.6-0.75 of a core, and half the
    consumer's rate without it was about all the consumer had left."""
    topic = f"bench-lat-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [f"{topic}.dlq"], partitions=PARTITIONS,
                        replication_factor=1)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(
            topic, num_partitions=PARTITIONS, replication_factor=1,
            topic_configs={**topic_config(dead_letters=False, replicas=1),
                           "message.timestamp.type": "LogAppendTime"})])
    finally:
        await admin.close()
    routed = msgspec.structs.replace(settings, topic_names={**settings.topic_names, name: topic})
    env = {f"CIE_TOPIC_{name.upper()}": topic,
           "CIE_BATCH_MAX_ROWS": "1000", "CIE_BATCH_MAX_LATENCY_MS": "100"}
    await truncate(url)
    records = [(route(routed, event)[1], encode(event))
               for event in events[:min(len(events), int(rate * seconds))]]
    sent: dict[tuple[int, int], tuple[float, float]] = {}  # (due, broker append) times
    async with Consumer(settings, url, env, log):
        await asyncio.sleep(3)  # let it join the group
        producer = make_producer(routed, linger_ms=1, max_batch_size=1 << 20,
                                 compression_type=COMPRESSION)
        await producer.start()
        started, wall, cpu = time.perf_counter(), time.time(), time.process_time()
        pending: list[tuple[asyncio.Future[Any], list[int]]] = []
        done = 0
        while done < len(records):
            await asyncio.sleep(max(0.0, started + done / rate + PRODUCE_TICK
                                    - time.perf_counter()))
            due = min(len(records), int((time.perf_counter() - started) * rate) + 1)
            pending += await send_batches(producer, topic, records, range(done, due))
            done = due
        elapsed = time.perf_counter() - started
        kept, cores = len(records) / elapsed, (time.process_time() - cpu) / elapsed
        for future, indexes in pending:
            batch = await future
            for offset, index in enumerate(indexes, start=batch.offset):
                sent[(batch.partition, offset)] = (wall + index / rate, batch.timestamp / 1000)
        await producer.stop()
        await asyncio.sleep(3)
    committed: dict[tuple[int, int], float] = {}
    for flush in flushes(log):
        for partition, span in flush["partitions"].items():
            low, high = (int(x) for x in span.split("-"))
            for offset in range(low, high + 1):
                committed[(int(partition), offset)] = stamp(flush)
    stored = [(committed[key], starts) for key, starts in sent.items() if key in committed]
    from_send = statistics.quantiles([(commit - starts[0]) * 1000 for commit, starts in stored],
                                     n=100)
    from_broker = statistics.quantiles([(commit - starts[1]) * 1000
                                        for commit, starts in stored], n=100)
    return Latency(round(from_send[49], 1), round(from_send[98], 1), round(from_broker[49], 1),
                   round(from_broker[98], 1), len(stored), round(kept), round(cores, 2))


async def send_batches(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]],
    indexes: range,
) -> list[tuple[asyncio.Future[Any], list[int]]]:
    """The ``records`` (key, value) at ``indexes`` handed to the producer as a batch per
    partition (the default partitioner's choice): each batch's future and its records' indexes.

    Pre-encoded and batched, a record costs this process about 3.4 us of CPU where
    ``send()`` of an event took 15.5 (0.6-0.75 of a core at the latency runs' rates, on the
    cores the consumer, broker and server share)."""
    batches: dict[int, list[tuple[BatchBuilder, list[int]]]] = {}
    for index in indexes:
        key, value = records[index]
        partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
        open_batches = batches.setdefault(partition, [(producer.create_batch(), [])])
        if open_batches[-1][0].append(key=key, value=value, timestamp=None) is None:  # full
            open_batches.append((producer.create_batch(), []))
            open_batches[-1][0].append(key=key, value=value, timestamp=None)
        open_batches[-1][1].append(index)
    futures = []
    for partition, builders in batches.items():
        for builder, batch_indexes in builders:
            builder.close()
            futures.append((await producer.send_batch(builder, topic, partition=partition),
                            batch_indexes))
    return futures


async def scale_out(settings: Settings, url: str, name: str, topic_env: dict[str, str],
                    table: str, events: list[Any], reference: CopyBatches,
                    args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """``cie consume --processes N`` at the largest batch size, against the server's COPY of
    the same run (``reference``: its batches for a batch size)."""
    batch = max(args.batch_sizes)
    before = server_copy_limit(url, reference(batch), len(events), logs)
    runs = {n: await end_to_end(settings, url, topic_env, table, len(events), batch,
                                logs / f"{name}-processes-{n}.log", processes=n)
            for n in args.processes}
    after = server_copy_limit(url, reference(batch), len(events), logs)
    server = max(before, after)  # as in measure(): the better of before and after
    out: dict[str, Any] = {"batch": batch, "server_copy_per_s": round(server),
                           "server_copy_before_after_per_s": [round(before), round(after)]}
    for n, (rate, rss, _) in runs.items():
        out[str(n)] = {"end_to_end_per_s": round(rate), "ratio_to_server_copy":
                       round(rate / server, 3), "peak_rss_mb_per_process": round(rss, 1)}
        print(f"{name} --processes {n} batch={batch}: {rate:,.0f}/s = {rate / server:.0%} of "
              f"the server's COPY ({server:,.0f}/s, the better of {before:,.0f} before and "
              f"{after:,.0f} after); peak RSS {rss:.0f} MB a process", flush=True)
    return out


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    name = f"cie_bench_{os.getpid()}"
    url = await create_database(settings, name, args.timescaledb)
    try:
        await measure(args, settings, url)
    finally:
        await drop_database(settings, name)


async def measure(args: argparse.Namespace, settings: Settings, url: str) -> None:
    logs = Path(tempfile.mkdtemp(prefix="cie-bench-"))
    print(f"consumer logs: {logs}", flush=True)
    cases: list[tuple[str, str, list[Any], Any, Sequence[str], Any]] = [
        ("bars", "market_conditions", make_bars(args.bars), BarsPipeline(),
         tuple(Bar.__struct_fields__), lambda e: msgspec.structs.astuple(e)),
        ("fills", "trade_fills", make_fills(args.fills), FillsPipeline(),
         FILL_COLUMNS, lambda e: msgspec.structs.astuple(e)),
    ]
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "cases": {}}
    for name, table, events, pipeline, columns, to_row in cases:
        if name not in args.cases:
            continue
        n = len(events)
        topic = await produce(settings, name, events)
        topic_env = {f"CIE_TOPIC_{name.upper()}": topic}
        kafka = await kafka_limit(settings, topic, n, pipeline)
        rows = [to_row(e) for e in events]
        case: dict[str, Any] = {"events": n, "kafka_getmany_decode_per_s": round(kafka)}
        reference = functools.partial(reference_batches, name, table, columns, events, rows)
        # what a row is before the database writes it: its COPY text (fills: with trade rows)
        case["copy_text_bytes_per_row"] = round(sum(
            len(line) for batch in reference(10_000) for _, _, lines in batch
            for line in lines) / n, 1)
        for batch in args.batch_sizes:
            before = server_copy_limit(url, reference(batch), n, logs)
            copy = await copy_limit(url, table, columns, rows, batch)
            rate, rss, cost = await end_to_end(settings, url, topic_env, table, n, batch,
                                               logs / f"{name}-{batch}.log")
            # The reference, before and after: the better one is what the database can take
            # (a neighbour on the shared machine slowed one of them by up to 40 %).
            after = server_copy_limit(url, reference(batch), n, logs)
            server = max(before, after)
            case[f"batch_{batch}"] = {
                "end_to_end_per_s": round(rate), "server_copy_per_s": round(server),
                "server_copy_before_after_per_s": [round(before), round(after)],
                "ratio_to_server_copy": round(rate / server, 3),
                "asyncpg_binary_copy_per_s": round(copy), "peak_rss_mb": round(rss, 1),
                "per_1000_rows": cost._asdict() if cost else None}
            what = "its fills and trade rows" if name == "fills" else "the rows"
            print(f"{name} batch={batch}: {rate:,.0f}/s end to end = {rate / server:.0%} of "
                  f"the server's COPY of {what} ({server:,.0f}/s, the better of "
                  f"{before:,.0f} before and {after:,.0f} after); asyncpg binary COPY "
                  f"{copy:,.0f}/s, Kafka+decode {kafka:,.0f}/s; peak RSS {rss:.0f} MB; "
                  f"per 1,000 rows {cost}", flush=True)
        if args.processes:
            case["processes"] = await scale_out(settings, url, name, topic_env, table, events,
                                                reference, args, logs)
        if "batch_1000" not in case or not args.latency_seconds:
            print(f"{name} latency: not measured (it runs at half the 1,000-row rate for "
                  "--latency-seconds; add 1000 to --batch-sizes)", flush=True)
            results["cases"][name] = case
            continue
        latency_rate = args.latency_rate or case["batch_1000"]["end_to_end_per_s"] / 2
        measured = await latency(settings, url, name, events, latency_rate,
                                 args.latency_seconds, logs / f"{name}-latency.log")
        case["latency"] = {"rate_per_s": round(latency_rate), "rate_fixed": bool(args.latency_rate),
                           **msgspec.structs.asdict(measured)}
        print(f"{name} latency at {latency_rate:,.0f}/s (the producer kept "
              f"{measured.producer_kept_per_s:,.0f}/s on {measured.producer_cores:.2f} "
              f"cores): from the due time p50 {measured.p50_ms:.0f} ms, "
              f"p99 {measured.p99_ms:.0f} ms; from the broker's append p50 "
              f"{measured.broker_p50_ms:.0f} ms, p99 {measured.broker_p99_ms:.0f} ms "
              f"({measured.events} events)", flush=True)
        results["cases"][name] = case
    print(json.dumps(results, indent=2))
    if args.out:  # for bench/capacity.py
        results["path"] = "timescaledb" if args.timescaledb else "plain"
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--fills", type=int, default=40_000)
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[100, 1000, 10_000])
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-rate", type=float, default=0,
                        help="events/s for the latency run (default: half the 1,000-row rate)")
    parser.add_argument("--processes", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[1, 2], help="cie consume --processes N, for each N (empty: none)")
    parser.add_argument("--cases", type=lambda s: s.split(","), default=["bars", "fills"])
    parser.add_argument("--timescaledb", action="store_true",
                        help="hypertables (the extension must be installed)")
    parser.add_argument("--out", type=Path, help="also write the results here, as JSON")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
