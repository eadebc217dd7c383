"""Test data, built one way: a fill message, and rows written straight into the tables."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from consumers.analytics.performance import RatioSettings
from consumers.analytics.rollup import RollupSettings
from consumers.contracts.fills import Fill
from tests.support.clock import MONDAY, T0

T1 = T0 + timedelta(minutes=20)


# the settings the rollup tests' hand-computed figures assume
ROLLUP_SETTINGS = RollupSettings(
    time_zone="UTC",
    ratios=RatioSettings(capital_base=Decimal(10_000), periods_per_year=252,
                         risk_free_rate=Decimal(0)),
    regime_bar_max_age=timedelta(minutes=5),
    replica_wait_seconds=5,
)


def fill(trade: uuid.UUID, side: Literal["BUY", "SELL"], quantity: int, price: str,
         minutes: float = 0, *, seconds: float = 0, commission: str = "0",
         strategy: str = "s", symbol: str = "AAPL", intended: str | None = None,
         fill_id: uuid.UUID | None = None) -> Fill:
    """A fill of ``trade`` at T0 plus ``minutes`` and ``seconds``; prices as decimal text."""
    return Fill(fill_id=fill_id or uuid.uuid4(), trade_id=trade, strategy_id=strategy,
                model_version="v1", symbol=symbol, side=side, quantity=quantity,
                price=Decimal(price), commission=Decimal(commission),
                intended_price=Decimal(intended) if intended else None,
                filled_at=T0 + timedelta(minutes=minutes, seconds=seconds))


def valid_rows() -> dict[str, dict[str, Any]]:
    """One valid row per table; fresh ids each call."""
    return {
        "trade_outcomes": dict(
            trade_id=uuid.uuid4(), strategy_id="momentum", model_version="v1.2", symbol="AAPL",
            direction="LONG", entry_time=T0, exit_time=T1, entry_price=Decimal("10"),
            exit_price=Decimal("11"), quantity=5, commission=Decimal("1"), duration_seconds=1200,
            outcome_type="WIN",
        ),
        "trade_fills": dict(
            fill_id=uuid.uuid4(), trade_id=uuid.uuid4(), strategy_id="momentum",
            model_version="v1.2", symbol="AAPL", side="BUY", quantity=5, price=Decimal("10"),
            commission=Decimal("0.5"), intended_price=Decimal("10"), filled_at=T1,
            order_submitted_at=T0,
        ),
        "model_predictions": dict(
            prediction_id=uuid.uuid4(), model_version="v1.2", model_type="direction",
            symbol="AAPL", predicted_at=T0, prediction_horizon_minutes=5,
            predicted_direction="LONG", confidence_score=Decimal("0.7"),
            predicted_volatility=Decimal("0.01"), feature_vector=json.dumps({"rsi": 50}),
            actual_direction="SHORT",
        ),
        "market_conditions": dict(
            symbol="AAPL", timestamp=T0, open=Decimal("10"), high=Decimal("11"),
            low=Decimal("9"), close=Decimal("10.5"), volume=100, rsi_14=Decimal("50"),
            detected_regime="ranging", regime_confidence=Decimal("0.5"),
            spy_correlation=Decimal("0.5"), sector_correlation=Decimal("-0.5"),
        ),
        "strategy_performance": dict(
            strategy_id="momentum", model_version="v1.2", period_type="DAY",
            period_start=MONDAY, total_trades=3, winning_trades=1, losing_trades=1,
            breakeven_trades=1, win_rate=Decimal("0.3333"),
        ),
        "model_performance": dict(
            model_version="v1.2", model_type="direction", evaluation_date=MONDAY,
            training_samples=10, testing_samples=5, training_period_start=MONDAY - timedelta(days=60),
            training_period_end=MONDAY - timedelta(days=29), accuracy=Decimal("0.5"),
            precision=Decimal("0.5"), recall=Decimal("0.5"), f1_score=Decimal("0.5"),
            auc_roc=Decimal("0.5"), brier_score=Decimal("0.2"),
            expected_calibration_error=Decimal("0.1"), live_accuracy=Decimal("0.5"),
            status="staging",
        ),
        "improvement_events": dict(
            event_id=uuid.uuid4(), event_type="model_deployed", component_type="model",
            component_id="direction-v1.2",
        ),
        "ab_tests": dict(
            test_id=uuid.uuid4(), test_name="v1.2 vs v1.3", control_version="v1.2",
            treatment_version="v1.3", test_type="model", control_traffic_percent=50,
            treatment_traffic_percent=50, started_at=T0, ended_at=T1,
            scheduled_duration_hours=48, success_metric="sharpe_ratio", status="running",
        ),
        "optimization_queue": dict(
            task_type="hyperparameter", component_id="direction-v1.2", frequency="daily",
            next_run_at=T0, status="pending", priority=1, consecutive_failures=0,
            config=json.dumps({"trials": 20}),
        ),
        "retention_rules": dict(
            table_name="scratch", time_column="ts", keep_for=timedelta(days=1),
        ),
        "rollup_pending": dict(kind="trade", strategy_id="momentum", model_version="v1.2",
                               day=T0.date()),
        "command_runs": dict(command="rollup", last_success_at=T0, last_duration_seconds=1.5),
        "prediction_quarter_tallies": dict(
            model_version="v1.2", quarter=T0, day=T0.date(), tally=2,
            confidence_score=Decimal("0.7500"), right=True, calls=3),
        "prediction_day_tallies": dict(
            model_version="v1.2", day=T0.date(), tally=2, confidence_score=Decimal("0.7500"),
            right=True, calls=3),
        "prediction_tallies_kept": dict(time_zone="UTC", kept_from=T0.date()),
        "model_day_calls": dict(model_version="v1.2", day=T0.date(), calls=10, right_calls=6),
        "archive_parts": dict(
            table_name="trade_outcomes", month=date(2020, 3, 1), part=0,
            object_key="trade_outcomes/year=2020/month=03/part-00000.parquet", row_count=10,
            min_time=T0, max_time=T0, bytes=2048, sha256="0" * 64, verified_at=T0),
        "archive_slices": dict(table_name="trade_outcomes", slice_start=T0,
                               slice_end=T0 + timedelta(days=7), live_rows=10,
                               live_checksum=Decimal(123), epoch=0, removed_rows=0),
    }


async def insert(conn: asyncpg.Connection, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(f'"{name}"' for name in row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(f"INSERT INTO {table} ({names}) VALUES ({params})", *row.values())


def at(day: date, hour: int = 15, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def add_trade(db: asyncpg.Connection, *, exit_day: date | None, net: str,
                    commission: str = "0", strategy: str = "s1", model: str = "m1",
                    slippage: str | None = None, exit_hour: int = 15,
                    fill_latencies_ms: tuple[int | None, ...] = ()) -> uuid.UUID:
    """A trade row as the fills pipeline derives it (fill latencies summed per trade)."""
    trade_id = uuid.uuid4()
    net_pnl = Decimal(net)
    exit_time = at(exit_day, exit_hour) if exit_day else None
    entry_time = (exit_time or at(MONDAY)) - timedelta(hours=1)
    outcome = ("OPEN" if exit_time is None else
               "WIN" if net_pnl > 0 else "LOSS" if net_pnl < 0 else "BREAKEVEN")
    timed = [ms for ms in fill_latencies_ms if ms is not None]
    await db.execute(
        """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction,
               entry_time, exit_time, entry_price, exit_price, quantity, gross_pnl, net_pnl,
               commission, slippage, duration_seconds, outcome_type, fill_latency_us_sum,
               fill_latency_count)
           VALUES ($1, $2, $3, 'AAPL', 'LONG', $4, $5, 100, 101, 10, $6, $7, $8, $9, 3600, $10,
                   $11, $12)""",
        trade_id, strategy, model, entry_time, exit_time,
        net_pnl + Decimal(commission) if exit_time else None, net_pnl if exit_time else None,
        Decimal(commission), Decimal(slippage) if slippage is not None else None, outcome,
        sum(ms * 1000 for ms in timed), len(timed))
    return trade_id
