"""`cie demo`: a simulated trading session, produced through the typed producer.

For each symbol, one bar a minute from a random walk, with its indicators (EMA 20/50, RSI 14,
ATR 14, Bollinger bands, MACD) and a regime; every five minutes a prediction per horizon
(5, 15, 60 minutes); now and then a trade opened and closed by partial fills; a few
improvement events (an evaluation, an A/B test, an optimization task's life); and about one
message in a hundred deliberately malformed, to show the dead-letter topics at work.
The session ends at the current minute, so predictions become validatable as it goes.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import msgspec
import structlog

from consumers.contracts.bars import Bar, Regime
from consumers.contracts.encoding import Encoding
from consumers.contracts.fills import Fill
from consumers.contracts.improvements import (
    AbTestStarted,
    Improvement,
    ImprovementEvent,
    ModelEvaluation,
    OptimizationCompleted,
    OptimizationScheduled,
    OptimizationStarted,
)
from consumers.contracts.predictions import Direction, Prediction
from consumers.contracts.tasks import OptimizationTask
from consumers.ingest.kafka import make_consumer, make_producer
from consumers.platform.settings import Settings
from consumers.producer import Contract, EventProducer
from consumers.topics import TASKS, kafka_topic

log = structlog.get_logger(__name__)

PRICE = Decimal("0.00000001")
CENT = Decimal("0.01")


def q(value: float, unit: Decimal = PRICE) -> Decimal:
    return Decimal(repr(value)).quantize(unit)


@dataclass
class Market:
    """Running state of one symbol's random walk and indicators."""

    price: float
    closes: list[float] = field(default_factory=list)
    ema20: float = 0.0
    ema50: float = 0.0
    ema12: float = 0.0
    ema26: float = 0.0
    signal: float = 0.0
    atr: float = 0.0

    def step(self, rng: random.Random, symbol: str, at: datetime) -> Bar:
        open_ = self.price
        close = max(1.0, open_ * (1 + rng.gauss(0.0002, 0.002)))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.0008)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.0008)))
        self.price = close
        self.closes = [*self.closes[-19:], close]
        first = len(self.closes) == 1
        self.ema20 = close if first else self.ema20 + (close - self.ema20) * 2 / 21
        self.ema50 = close if first else self.ema50 + (close - self.ema50) * 2 / 51
        self.ema12 = close if first else self.ema12 + (close - self.ema12) * 2 / 13
        self.ema26 = close if first else self.ema26 + (close - self.ema26) * 2 / 27
        macd = self.ema12 - self.ema26
        self.signal = macd if first else self.signal + (macd - self.signal) * 2 / 10
        self.atr = (high - low) if first else self.atr + ((high - low) - self.atr) / 14
        mean = sum(self.closes) / len(self.closes)
        std = (sum((c - mean) ** 2 for c in self.closes) / len(self.closes)) ** 0.5
        gains = [max(0.0, b - a) for a, b in zip(self.closes, self.closes[1:], strict=False)]
        losses = [max(0.0, a - b) for a, b in zip(self.closes, self.closes[1:], strict=False)]
        rsi = 50.0 if not sum(losses) else 100 - 100 / (1 + sum(gains) / sum(losses))
        slope = (self.ema20 - self.ema50) / self.ema50
        regime: Regime = (
            "volatile" if std / mean > 0.004 else "trending_up" if slope > 0.0005
            else "trending_down" if slope < -0.0005 else "ranging")
        return Bar(
            symbol=symbol, timestamp=at, open=q(open_), high=q(high), low=q(low), close=q(close),
            volume=rng.randint(1_000, 50_000), atr_14=q(self.atr), rsi_14=q(rsi, CENT),
            ema_20=q(self.ema20), ema_50=q(self.ema50), bb_upper=q(mean + 2 * std),
            bb_lower=q(mean - 2 * std), macd_line=q(macd), macd_signal=q(self.signal),
            volatility_20d=q(std / mean, Decimal("0.000001")),
            vix=q(rng.uniform(14, 24), Decimal("0.0001")), detected_regime=regime,
            regime_confidence=q(rng.uniform(0.5, 0.99), Decimal("0.0001")),
            spy_correlation=q(rng.uniform(-0.2, 0.95), Decimal("0.001")),
            sector_correlation=q(rng.uniform(0.1, 0.99), Decimal("0.001")),
        )


Side = Literal["BUY", "SELL"]


def trade_fills(rng: random.Random, symbol: str, bars: list[Bar], strategy: str) -> list[Fill]:
    """A trade opened by 1-3 partial fills and, most of the time, closed by 1-2."""
    trade_id = uuid.uuid4()
    side: Side = "BUY" if rng.random() < 0.5 else "SELL"
    other: Side = "SELL" if side == "BUY" else "BUY"
    lots = [rng.randint(1, 5) * 10 for _ in range(rng.randint(1, 3))]
    fills = []
    for i, lot in enumerate(lots):
        bar = bars[min(i, len(bars) - 1)]
        fills.append(_fill(rng, trade_id, symbol, strategy, side, lot, bar))
    if rng.random() < 0.8 and len(bars) > 4:
        total = sum(lots)
        first = total // 2 if rng.random() < 0.5 else total
        for j, lot in enumerate(x for x in (first, total - first) if x):
            fills.append(_fill(rng, trade_id, symbol, strategy, other, lot, bars[-1 - j]))
    return fills


def _fill(rng: random.Random, trade_id: uuid.UUID, symbol: str, strategy: str, side: Side,
          quantity: int, bar: Bar) -> Fill:
    intended = bar.close
    price = (intended * Decimal(1 + rng.gauss(0, 0.0003))).quantize(PRICE)
    filled_at = bar.timestamp + timedelta(seconds=rng.randint(1, 50))
    return Fill(
        fill_id=uuid.uuid4(), trade_id=trade_id, strategy_id=strategy, model_version="dir-v3.1",
        symbol=symbol, side=side, quantity=quantity, price=price,
        commission=Decimal("0.35") * (quantity // 10), intended_price=intended, filled_at=filled_at,
        order_submitted_at=filled_at - timedelta(milliseconds=rng.randint(5, 400)))


# The demo's A/B test: the session's trades alternate between these two strategies.
CONTROL, TREATMENT = "momentum", "momentum-v2"


@dataclass(frozen=True)
class Loop:
    """What the improvement loop of a demo session is about (`cie demo --loop`)."""

    task_id: uuid.UUID  # an optimization task, due at the session's end
    test_id: uuid.UUID  # an A/B test of the session's two strategies, over at its end


def improvement_events(loop: Loop, start: datetime, now: datetime) -> list[Contract]:
    return [
        ModelEvaluation(event_id=uuid.uuid4(), model_version="dir-v3.2", model_type="direction",
                        evaluation_date=date.today(), training_samples=120_000,
                        testing_samples=30_000, accuracy=Decimal("0.5612"),
                        precision=Decimal("0.5723"), recall=Decimal("0.5401"),
                        f1_score=Decimal("0.5557"), auc_roc=Decimal("0.5934"),
                        brier_score=Decimal("0.24311"), status="staging"),
        AbTestStarted(event_id=uuid.uuid4(), test_id=loop.test_id,
                      test_name=f"{CONTROL} vs {TREATMENT}", control_version=CONTROL,
                      treatment_version=TREATMENT, test_type="strategy",
                      control_traffic_percent=50, treatment_traffic_percent=50,
                      started_at=start, scheduled_duration_hours=1, success_metric="win_rate"),
        OptimizationScheduled(event_id=uuid.uuid4(), task_id=loop.task_id,
                              task_type="hyperparameter", component_id="dir-v3.2",
                              frequency="daily", next_run_at=now - timedelta(minutes=1),
                              priority=2, config={"trials": 50}),
        Improvement(event_id=uuid.uuid4(), event_type="params_optimized",
                    component_type="model", component_id="dir-v3.2",
                    old_value={"lr": Decimal("0.01")}, new_value={"lr": Decimal("0.003")},
                    trigger_reason="scheduled_retrain",
                    performance_before={"sharpe_ratio": Decimal("1.12")},
                    performance_after={"sharpe_ratio": Decimal("1.31")},
                    improvement_metrics={"sharpe_ratio_percent": Decimal("16.96")}),
    ]


MALFORMED: list[bytes] = [
    b"{not json",
    b'{"symbol": "AAPL"}',
    b'{"symbol": "AAPL", "timestamp": "2026-01-01T10:00:00", "open": "1", "high": "1", '
    b'"low": "1", "close": "1", "volume": 1}',
    b'{"symbol": "AAPL", "timestamp": "2026-01-01T10:00:00Z", "open": "1.123456789", '
    b'"high": "2", "low": "1", "close": "1", "volume": 1}',
]


def session(rng: random.Random, *, start: datetime, minutes: int, symbols: list[str],
            loop: Loop | None = None) -> list[Contract]:
    """The events of a session of ``minutes`` from ``start``, in the order they happen (the
    improvement events last, at the session's end)."""
    markets = {s: Market(price=rng.uniform(50, 500)) for s in symbols}
    history: dict[str, list[Bar]] = {s: [] for s in symbols}
    events: list[Contract] = []
    for minute in range(minutes):
        at = start + timedelta(minutes=minute)
        for number, (symbol, market) in enumerate(markets.items()):
            bar = market.step(rng, symbol, at)
            history[symbol].append(bar)
            events.append(bar)
            if minute % 5 == 0:
                events.extend(_predictions(rng, bar, market))
            if minute % 15 == 14:
                strategy = (CONTROL, TREATMENT)[(minute // 15 + number) % 2]
                events.extend(trade_fills(rng, symbol, history[symbol][-12:], strategy))
    loop = loop or Loop(uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=rng.getrandbits(128)))
    events.extend(improvement_events(loop, start, start + timedelta(minutes=minutes)))
    return events


async def run_demo(settings: Settings, *, minutes: int, symbols: list[str],
                   seed: int, encoding: Encoding = Encoding.JSON) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    loop = Loop(uuid.uuid4(), uuid.uuid4())
    events = session(rng, start=now - timedelta(minutes=minutes), minutes=minutes,
                     symbols=symbols, loop=loop)

    producer = make_producer(settings)
    await producer.start()
    try:
        typed = EventProducer(producer, settings, encoding)
        futures = [await typed.send(event) for event in events]
        malformed = [value for value in MALFORMED for _ in range(max(1, len(events) // 400))]
        bars = kafka_topic(settings, "bars")
        futures += [await typed.send_raw(bars, b"BAD", value) for value in malformed]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    kinds: dict[str, int] = {}
    for event in events:
        kinds[type(event).__name__] = kinds.get(type(event).__name__, 0) + 1
    return {"events": len(events), "malformed": len(malformed), **kinds,
            "task_id": str(loop.task_id), "test_id": str(loop.test_id)}


async def improvement_loop(settings: Settings, loop: Loop, within: float) -> dict[str, str]:
    """The rest of the loop, watched from Kafka (`cie demo --loop`): the demo plays the
    optimization worker (takes its task's run from optimization-tasks, reports it started and
    completed on improvement-events) and waits for the A/B test's conclusion, which the
    scheduler publishes there. Requires `cie consume` and `cie schedule` running; ends after
    ``within`` seconds at most, saying what it saw."""
    seen: dict[str, str] = {}
    producer = make_producer(settings)
    tasks = make_consumer(settings, group_id="cie-demo-worker")
    events = make_consumer(settings, group_id=f"cie-demo-watch-{loop.test_id}")
    await producer.start()
    try:
        await tasks.start()
        await events.start()
        tasks.subscribe([TASKS.kafka_name(settings)])
        events.subscribe([kafka_topic(settings, "improvements")])
        typed = EventProducer(producer, settings)
        deadline = time.monotonic() + within
        while len(seen) < 2 and time.monotonic() < deadline:
            for task in _decoded(await tasks.getmany(timeout_ms=500), OptimizationTask):
                if task.task_id == loop.task_id and "task" not in seen:
                    await _work(typed, task)
                    seen["task"] = f"run {task.run_number} completed"
                    log.info("demo.task_completed", task_id=str(task.task_id),
                             run_number=task.run_number, task_type=task.task_type)
            for event in _decoded(await events.getmany(timeout_ms=500), ImprovementEvent):
                if (isinstance(event, Improvement) and event.component_id == str(loop.test_id)
                        and event.event_type.startswith("ab_test_")):
                    seen["ab_test"] = event.event_type.removeprefix("ab_test_")
                    log.info("demo.ab_test_concluded", test_id=str(loop.test_id),
                             status=seen["ab_test"],
                             improvement=event.improvement_metrics)
        await tasks.commit()
    finally:
        await asyncio.gather(tasks.stop(), events.stop(), return_exceptions=True)
        await producer.stop()
    if len(seen) < 2:
        log.warning("demo.loop_incomplete", seen=seen, hint="are cie consume and cie schedule "
                    "running (deploy/local/stack.sh run starts them)?")
    return seen


def _decoded(batches: dict[Any, list[Any]], kind: Any) -> list[Any]:
    """The records' values that decode as ``kind`` (others are not the demo's business)."""
    decoded = []
    for records in batches.values():
        for record in records:
            try:
                decoded.append(msgspec.json.decode(record.value, type=kind))
            except (msgspec.DecodeError, TypeError):
                continue
    return decoded


async def _work(typed: EventProducer, task: OptimizationTask) -> None:
    """An optimization run, reported as a worker would: started, then completed."""
    started = datetime.now(UTC)
    sent = [await typed.send(OptimizationStarted(event_id=uuid.uuid4(), task_id=task.task_id,
                                                 started_at=started,
                                                 run_number=task.run_number)),
            await typed.send(OptimizationCompleted(
                event_id=uuid.uuid4(), task_id=task.task_id, completed_at=started,
                run_number=task.run_number, result={"best_lr": Decimal("0.003"), "trials": 50}))]
    await asyncio.gather(*sent)


def _predictions(rng: random.Random, bar: Bar, market: Market) -> list[Prediction]:
    direction: Direction = "LONG" if market.ema20 >= market.ema50 else "SHORT"
    return [
        Prediction(
            prediction_id=uuid.uuid4(), model_version="dir-v3.1", model_type="direction",
            symbol=bar.symbol, predicted_at=bar.timestamp, prediction_horizon_minutes=horizon,
            predicted_direction=direction if rng.random() > 0.1 else "NEUTRAL",
            confidence_score=q(rng.uniform(0.5, 0.95), Decimal("0.0001")),
            predicted_volatility=q(rng.uniform(0.001, 0.03), Decimal("0.000001")),
            feature_vector={"rsi_14": bar.rsi_14, "ema_gap": q(market.ema20 - market.ema50),
                            "atr_14": bar.atr_14},
        )
        for horizon in (5, 15, 60)
    ]
