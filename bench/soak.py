"""A soak: every service running together for a while at a steady rate, reported each minute.

    deploy/local/stack.sh up
    .venv/bin/pip install -e '.[bench]'          # matplotlib, for --plot
    .venv/bin/python bench/soak.py [--minutes 30] [--rate 2000] [--symbols 50] [--timescaledb]
        [--out soak.json] [--plot soak.png]

Runs against the local stack, in a database and topics of its own: two `cie consume` (one
group), `cie validate`, `cie schedule`, `cie notify` (to a loopback webhook sink), `cie rollup`
every 30 s and `cie maintain` once half-way. A producer sends live market data as services do:
per symbol a bar with indicators at full precision, a prediction per horizon every fifth bar,
trades opened and closed by partial fills, and improvement events, all timestamped now, at
``--rate`` events a second in total. On TimescaleDB, bars eight days old are stored first, so
`cie maintain` compresses their chunks while ingest runs.

Every minute it prints (and ``--out`` keeps, one JSON object a line) each process's resident
memory, each topic's lag, the bars' end-to-end latency (producer's timestamp to the row's
``created_at``: the write's transaction start) p50/p99, and errors (warning/error log lines,
dead letters, exits). At the end the producer stops, lag must drain, every service must stop
cleanly, and every produced event must be stored once. Exit code 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "deploy/local")]

import cpu  # noqa: E402
from ingest_bench import create_database, send_batches  # noqa: E402
from webhook_sink import FakeDiscord  # noqa: E402

from consumers.contracts.bars import Bar  # noqa: E402
from consumers.contracts.fills import Fill  # noqa: E402
from consumers.contracts.improvements import (  # noqa: E402
    Improvement,
    ModelEvaluation,
    OptimizationScheduled,
)
from consumers.contracts.predictions import Prediction  # noqa: E402
from consumers.demo import PRICE, Market, q  # noqa: E402
from consumers.ingest.kafka import ensure_topics, make_producer  # noqa: E402
from consumers.platform.settings import Settings, load_settings  # noqa: E402
from consumers.producer import Contract, encode, route  # noqa: E402

SERVICES = ("consume-1", "consume-2", "validate", "schedule", "notify")
TOPICS = {"bars": "BARS", "predictions": "PREDICTIONS", "fills": "FILLS",
          "improvements": "IMPROVEMENTS", "tasks": "TASKS"}
PARTITIONS = 4
ROLLUP_EVERY = 30.0
TICK = 0.1  # the producer sends a tenth of a second's events at a time


# --- the traffic ------------------------------------------------------------------------------


@dataclass
class Trade:
    trade_id: uuid.UUID
    side: str
    quantity: int
    strategy: str


@dataclass
class Traffic:
    """Live events for ``symbols``: bars dominate, as in production."""

    rng: random.Random
    symbols: list[str]
    markets: dict[str, Market] = field(default_factory=dict)
    bars_sent: dict[str, int] = field(default_factory=dict)
    open_trades: dict[str, Trade] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.markets = {s: Market(price=self.rng.uniform(20, 900)) for s in self.symbols}
        self.bars_sent = dict.fromkeys(self.symbols, 0)

    def next_events(self, count: int) -> list[Contract]:
        """About ``count`` events: bars round-robin over the symbols, with what follows them."""
        events: list[Contract] = []
        while len(events) < count:
            symbol = self.symbols[sum(self.bars_sent.values()) % len(self.symbols)]
            events += self._after_bar(symbol)
        return events

    def _after_bar(self, symbol: str) -> list[Contract]:
        now = datetime.now(UTC)
        market = self.markets[symbol]
        bar = market.step(self.rng, symbol, now)
        self.bars_sent[symbol] += 1
        events: list[Contract] = [bar]
        n = self.bars_sent[symbol]
        if n % 5 == 0:
            events += self._predictions(bar, market, now)
        if n % 40 == 0:
            events += self._trade_step(symbol, bar, now)
        if n % 500 == 0 and symbol == self.symbols[0]:
            events.append(self._improvement(now))
        for event in events:
            kind = type(event).__name__
            self.sent[kind] = self.sent.get(kind, 0) + 1
        return events

    def _predictions(self, bar: Bar, market: Market, now: datetime) -> list[Contract]:
        direction = "LONG" if market.ema20 >= market.ema50 else "SHORT"
        return [Prediction(
            prediction_id=uuid.uuid4(), model_version="dir-v3.1", model_type="direction",
            symbol=bar.symbol, predicted_at=now, prediction_horizon_minutes=horizon,
            predicted_direction=direction if self.rng.random() > 0.1 else "NEUTRAL",  # type: ignore[arg-type]
            confidence_score=q(self.rng.uniform(0.5, 0.95), Decimal("0.0001")),
            predicted_volatility=q(self.rng.uniform(0.001, 0.03), Decimal("0.000001")),
            feature_vector={"rsi_14": bar.rsi_14, "ema_gap": q(market.ema20 - market.ema50),
                            "atr_14": bar.atr_14, "close": bar.close})
            for horizon in (1, 5, 15)]

    def _trade_step(self, symbol: str, bar: Bar, now: datetime) -> list[Contract]:
        """Open a trade (1-3 partial fills) or close the open one (1-2)."""
        trade = self.open_trades.pop(symbol, None)
        if trade is None:
            trade = Trade(uuid.uuid4(), self.rng.choice(("BUY", "SELL")), 0,
                          self.rng.choice(("momentum", "momentum-v2")))
            lots = [self.rng.randint(1, 5) * 10 for _ in range(self.rng.randint(1, 3))]
            trade.quantity = sum(lots)
            self.open_trades[symbol] = trade
            return [self._fill(trade, trade.side, lot, bar, now, i) for i, lot in enumerate(lots)]
        other = "SELL" if trade.side == "BUY" else "BUY"
        first = trade.quantity // 2 if self.rng.random() < 0.5 else trade.quantity
        lots = [lot for lot in (first, trade.quantity - first) if lot]
        return [self._fill(trade, other, lot, bar, now, i) for i, lot in enumerate(lots)]

    def _fill(self, trade: Trade, side: str, quantity: int, bar: Bar, now: datetime,
              i: int) -> Fill:
        filled_at = now + timedelta(microseconds=i)
        return Fill(
            fill_id=uuid.uuid4(), trade_id=trade.trade_id, strategy_id=trade.strategy,
            model_version="dir-v3.1", symbol=bar.symbol, side=side,  # type: ignore[arg-type]
            quantity=quantity,
            price=(bar.close * Decimal(1 + self.rng.gauss(0, 0.0003))).quantize(PRICE),
            commission=Decimal("0.35") * (quantity // 10), intended_price=bar.close,
            filled_at=filled_at,
            order_submitted_at=filled_at - timedelta(milliseconds=self.rng.randint(5, 400)))

    def _improvement(self, now: datetime) -> Contract:
        if self.rng.random() < 0.5:
            return ModelEvaluation(
                event_id=uuid.uuid4(), model_version="dir-v3.2", model_type="direction",
                evaluation_date=date.today(), training_samples=120_000, testing_samples=30_000,
                accuracy=q(self.rng.uniform(0.5, 0.6), Decimal("0.0001")), status="staging")
        before = q(self.rng.uniform(0.8, 1.5), Decimal("0.0001"))
        return Improvement(
            event_id=uuid.uuid4(), event_type="params_optimized", component_type="model",
            component_id="dir-v3.2", old_value={"lr": q(self.rng.uniform(0.001, 0.01))},
            new_value={"lr": q(self.rng.uniform(0.001, 0.01))}, trigger_reason="soak",
            performance_before={"sharpe_ratio": before},
            performance_after={"sharpe_ratio": before + Decimal("0.05")})


async def produce(settings: Settings, traffic: Traffic, rate: int, stop: asyncio.Event) -> None:
    """``rate`` events a second until ``stop``, a tick's worth at a time, encoded here and
    handed to the producer as one batch per partition (``send_batches``: a tenth of the CPU
    of ``send()`` per event, on the cores the services share). A tick that falls behind is
    not made up: the soak holds a rate, it does not chase one."""
    producer = make_producer(settings)
    await producer.start()
    try:
        now = datetime.now(UTC)
        first: list[Contract] = [OptimizationScheduled(
            event_id=uuid.uuid4(), task_id=uuid.uuid4(), task_type="hyperparameter",
            component_id="dir-v3.2", frequency="hourly", next_run_at=now, priority=2,
            config={"trials": 50})]
        traffic.sent["OptimizationScheduled"] = 1
        await send(producer, settings, first)
        per_tick = max(1, round(rate * TICK))
        next_tick = time.monotonic()
        while not stop.is_set():
            await send(producer, settings, traffic.next_events(per_tick))
            next_tick = max(next_tick + TICK, time.monotonic() - TICK)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        await producer.stop()


async def send(producer: AIOKafkaProducer, settings: Settings, events: list[Contract]) -> None:
    """Send ``events`` and wait for the broker's acknowledgement (each key's events in order)."""
    by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
    for event in events:
        topic, key = route(settings, event)
        by_topic.setdefault(topic, []).append((key, encode(event)))
    futures = []
    for topic, records in by_topic.items():
        futures += [future for future, _ in await send_batches(
            producer, topic, records, range(len(records)))]
    await asyncio.gather(*futures)


# --- the services -----------------------------------------------------------------------------


@dataclass
class Services:
    environment: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # log bytes already counted

    def start(self) -> None:
        for name in SERVICES:
            command = name.split("-")[0]
            log = (self.logs / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "consumers", command], env=self.environment,
                stdout=log, stderr=subprocess.STDOUT)

    def resident_mib(self) -> dict[str, float]:
        return {name: cpu.status_kib(proc.pid, "VmRSS") / 1024
                for name, proc in self.processes.items() if proc.poll() is None}

    def exited(self) -> dict[str, int]:
        return {name: code for name, proc in self.processes.items()
                if (code := proc.poll()) is not None}

    def new_problems(self) -> dict[str, int]:
        """Warning and error log lines since the last call, per service."""
        found = {}
        for path in sorted(self.logs.glob("*.log")):
            with path.open("rb") as log:
                log.seek(self.offsets.get(path.name, 0))
                text = log.read()
                self.offsets[path.name] = log.tell()
            count = text.count(b'"level": "warning"') + text.count(b'"level": "error"')
            if count:
                found[path.stem] = count
        return found

    def stop(self) -> dict[str, int | None]:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.processes.items():
            try:
                codes[name] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        return codes


def run_once(environment: dict[str, str], log: Path, *command: str) -> dict[str, Any]:
    """``cie *command`` to its end: exit code, seconds, peak resident memory."""
    started = time.monotonic()
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "consumers", *command],
                                env=environment, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"command": command[0], "exit": proc.returncode,
            "seconds": round(time.monotonic() - started, 2),
            "peak_mib": round(usage.ru_maxrss / 1024, 1)}


async def rollups(environment: dict[str, str], workdir: Path,
                  runs: list[dict[str, Any]]) -> None:
    next_run = time.monotonic() + ROLLUP_EVERY
    while True:
        await asyncio.sleep(max(0.0, next_run - time.monotonic()))
        runs.append(await asyncio.shield(asyncio.to_thread(
            run_once, environment, workdir / "rollup.log", "rollup")))
        next_run = max(next_run + ROLLUP_EVERY, time.monotonic())


async def maintain_once(environment: dict[str, str], workdir: Path, runs: list[dict[str, Any]],
                        url: str, seeded: int, after: float) -> None:
    await asyncio.sleep(after)
    runs.append(await asyncio.to_thread(run_once, environment, workdir / "maintain.log",
                                        "maintain"))
    if seeded:  # and TimescaleDB's own scheduler compresses, now
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(COMPRESS_NOW)
        finally:
            await conn.close()


# --- what is measured each minute ----------------------------------------------------------


async def lag(settings: Settings, topics: dict[str, str], group: str) -> dict[str, int]:
    """Per topic: messages the group has not committed yet (read_committed end offsets)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    offsets = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                               group_id=None, isolation_level="read_committed")
    await admin.start()
    await offsets.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics.values() for p in range(PARTITIONS)]
        ends = await offsets.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        behind: dict[str, int] = {}
        for name, topic in topics.items():
            behind[name] = sum(
                ends[tp] - max(0, committed[tp].offset if tp in committed else 0)
                for tp in partitions if tp.topic == topic)
        return behind
    finally:
        await offsets.stop()
        await admin.close()


async def bar_latency(conn: asyncpg.Connection, since: datetime) -> dict[str, float | None]:
    """Bars written since ``since``: count and end-to-end latency percentiles, in ms."""
    row = await conn.fetchrow("""
        SELECT count(*) AS rows,
               percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM created_at - "timestamp")) AS seconds
        FROM market_conditions
        WHERE "timestamp" >= $1::timestamptz - interval '1 minute'
          AND created_at >= $1::timestamptz""", since)
    assert row is not None
    p50, p99 = row["seconds"] or (None, None)
    return {"bars": row["rows"], "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1)}


async def dead_letters(settings: Settings, topics: dict[str, str]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(f"{t}.dlq", p) for n, t in topics.items() if n != "tasks"
                      for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        return sum(ends[tp] - starts[tp] for tp in partitions)
    finally:
        await consumer.stop()


# --- the run ----------------------------------------------------------------------------------


# The bars' compression policy, due now: TimescaleDB's scheduler runs it while ingest writes
# (`cie maintain` runs only jobs the scheduler has left overdue).
COMPRESS_NOW = """
    SELECT alter_job(job_id, next_start => now()) FROM timescaledb_information.jobs
    WHERE proc_name = 'policy_compression' AND hypertable_name = 'market_conditions'"""


async def seed_old_bars(conn: asyncpg.Connection, symbols: list[str]) -> int:
    """Two days of minute bars, eight days old: chunks the compression policy wants."""
    status = await conn.execute("""
        INSERT INTO market_conditions (symbol, "timestamp", open, high, low, close, volume)
        SELECT s, t, p, p * 1.001, p * 0.999, p * (1 + (random() - 0.5) / 500),
               (random() * 100000)::bigint
        FROM unnest($1::text[]) AS s,
             generate_series(now() - interval '9 days', now() - interval '8 days',
                             interval '1 minute') AS t,
             LATERAL (SELECT round((50 + random() * 400)::numeric, 8) AS p) AS price""",
        symbols)
    return int(status.split()[-1])


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    base = load_settings(dict(os.environ))
    path = "timescaledb" if args.timescaledb else "plain"
    url = await create_database(base, f"cie_soak_{path}", args.timescaledb)
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"soak-{tag}-{name}" for name in TOPICS}
    sink = FakeDiscord()
    webhook = sink.start()
    environment = {
        **os.environ, "DATABASE_URL": url, "CIE_LOG_FORMAT": "json", "CIE_METRICS_PORT": "0",
        "CIE_DISCORD_WEBHOOK_URL": webhook, "CIE_CONSUMER_GROUP": f"soak-{tag}",
        "CIE_VALIDATOR_GROUP": f"soak-{tag}-validator",
        **{f"CIE_TOPIC_{variable}": topics[name] for name, variable in TOPICS.items()}}
    settings = load_settings(environment)
    await ensure_topics(settings, [*topics.values(), *(f"{t}.dlq" for t in topics.values())],
                        partitions=PARTITIONS, replication_factor=1)
    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    conn = await asyncpg.connect(url)
    seeded = await seed_old_bars(conn, symbols) if args.timescaledb else 0
    traffic = Traffic(random.Random(args.seed), symbols)
    services = Services(environment, workdir)
    services.start()
    stop_producing = asyncio.Event()
    producer = asyncio.create_task(produce(settings, traffic, args.rate, stop_producing))
    minutes: list[dict[str, Any]] = []
    one_off: list[dict[str, Any]] = []
    started = time.monotonic()
    # Like CronJobs that never overlap: a rollup every 30 s (the next right away when one took
    # longer), and `cie maintain` once half-way; they never hold up the minute's report.
    jobs = [asyncio.create_task(rollups(environment, workdir, one_off)),
            asyncio.create_task(maintain_once(environment, workdir, one_off, url, seeded,
                                              after=args.minutes * 30))]
    window, window_started = datetime.now(UTC), time.monotonic()
    sent_before: dict[str, int] = {}
    try:
        for minute in range(1, args.minutes + 1):
            while time.monotonic() < started + minute * 60:
                if producer.done():
                    producer.result()  # raises what stopped it
                await asyncio.sleep(0.5)
            now, elapsed = datetime.now(UTC), time.monotonic() - window_started
            sent = dict(traffic.sent)
            report = {
                "minute": minute,
                "sent_per_s": round((sum(sent.values()) - sum(sent_before.values())) / elapsed),
                "rss_mib": {k: round(v, 1) for k, v in services.resident_mib().items()},
                "lag": await lag(settings, {k: topics[k] for k in ("bars", "predictions",
                                                                    "fills", "improvements")},
                                 settings.consumer_group),
                "validator_lag": await lag(settings, {k: topics[k] for k in ("bars", "fills")},
                                           settings.validator_group),
                **await bar_latency(conn, window),
                "warnings": services.new_problems(), "exited": services.exited(),
                "dead_letters": await dead_letters(settings, topics),
                "one_off": [r for r in one_off if r.get("minute") is None],
            }
            for run in one_off:
                run.setdefault("minute", minute)
            sent_before, window, window_started = sent, now, time.monotonic()
            minutes.append(report)
            print(json.dumps(report), flush=True)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)  # a running one is waited for
    except BaseException:
        services.stop()
        raise
    finally:
        stop_producing.set()
        with contextlib.suppress(Exception):
            await producer
    try:
        summary = await finish(settings, topics, services, conn, traffic, seeded, minutes,
                               one_off)
    finally:
        services.stop()  # nothing left running, whatever happened (a no-op after finish)
        sink.stop()
        await conn.close()
    return {"path": path, "rate": args.rate, "symbols": args.symbols, "minutes": minutes,
            **summary}


async def finish(settings: Settings, topics: dict[str, str], services: Services,
                 conn: asyncpg.Connection, traffic: Traffic, seeded: int,
                 minutes: list[dict[str, Any]], one_off: list[dict[str, Any]]) -> dict[str, Any]:
    """Drain, stop, count: the checks that decide the exit code."""
    problems: list[str] = []
    consumed = {k: topics[k] for k in ("bars", "predictions", "fills", "improvements")}
    deadline = time.monotonic() + 120
    while sum((await lag(settings, consumed, settings.consumer_group)).values()):
        if time.monotonic() > deadline:
            problems.append("lag did not drain within 120 s of the producer's stop")
            break
        await asyncio.sleep(1)
    codes = services.stop()
    problems += [f"{name} exited {code}" for name, code in codes.items() if code != 0]
    stored = {
        "Bar": await conn.fetchval("SELECT count(*) FROM market_conditions") - seeded,
        "Prediction": await conn.fetchval("SELECT count(*) FROM model_predictions"),
        "Fill": await conn.fetchval("SELECT count(*) FROM trade_fills"),
    }
    problems += [f"{kind}: {stored[kind]} stored of {traffic.sent.get(kind, 0)} sent"
                 for kind in stored if stored[kind] != traffic.sent.get(kind, 0)]
    problems += [f"{run['command']} exited {run['exit']}" for run in one_off if run["exit"]]
    letters = await dead_letters(settings, topics)
    if letters:
        problems.append(f"{letters} dead letters")
    compressed = await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed"
    ) if seeded else None
    if seeded and not compressed:
        problems.append("no chunk was compressed")
    warm = minutes[len(minutes) // 5:] or minutes  # past the warm-up
    return {
        "sent": traffic.sent, "stored": stored, "compressed_chunks": compressed,
        "trades": await conn.fetchval("SELECT count(*) FROM trade_outcomes"),
        "validated": await conn.fetchval(
            "SELECT count(*) FROM model_predictions WHERE actual_direction IS NOT NULL"),
        "one_off": one_off,
        "bars_p99_ms_max": max((m["p99_ms"] or 0) for m in warm),
        "lag_max": max(max(m["lag"].values()) for m in warm),
        "validator_lag_max": max(max(m["validator_lag"].values()) for m in warm),
        "rss_growth_mib": {name: round(warm[-1]["rss_mib"].get(name, 0)
                                       - warm[0]["rss_mib"].get(name, 0), 1)
                           for name in SERVICES},
        "exit_codes": codes, "problems": problems,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib  # optional: only for --plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [m["minute"] for m in result["minutes"]]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    (rss, lags), (latency, rate) = axes
    for name in SERVICES:
        rss.plot(minutes, [m["rss_mib"].get(name) for m in result["minutes"]], label=name)
    rss.set_title("resident memory (MiB)")
    rss.legend(fontsize=7)
    for topic in ("bars", "predictions", "fills", "improvements"):
        lags.plot(minutes, [m["lag"][topic] for m in result["minutes"]], label=topic)
    for topic in ("bars", "fills"):
        lags.plot(minutes, [m["validator_lag"][topic] for m in result["minutes"]],
                  label=f"{topic} (validator)", linestyle="--")
    lags.set_title("consumer lag (messages)")
    lags.legend(fontsize=7)
    for key in ("p50_ms", "p99_ms"):
        latency.plot(minutes, [m[key] for m in result["minutes"]], label=key)
    latency.set_title("bars end to end (ms, log scale)")
    latency.set_yscale("log")
    latency.legend(fontsize=7)
    rate.plot(minutes, [m["sent_per_s"] for m in result["minutes"]])
    rate.set_title("events sent per second")
    for axis in (latency, rate):
        axis.set_xlabel("minute")
    figure.suptitle(f"soak, {result['path']}: {result['rate']} events/s, "
                    f"{len(minutes)} minutes")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=int, default=2000, help="events a second, all topics")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timescaledb", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="cie-soak-"))
    print(f"services' logs: {logs}", flush=True)
    result = asyncio.run(soak(args, logs))
    summary = {k: v for k, v in result.items() if k != "minutes"}
    print(json.dumps(summary, indent=2, default=str))
    if args.out:
        args.out.write_text(json.dumps(result, default=str) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 1 if result["problems"] else 0


def replot(out: Path, png: Path) -> None:
    """The plot of an earlier run's ``--out`` file (``soak.replot(out, png)``)."""
    plot(json.loads(out.read_text()), png)


if __name__ == "__main__":
    sys.exit(main())
