"""Every CHECK rejects a bad row under its own name; every unique key rejects a duplicate.

PostgreSQL tests a row's CHECK constraints in alphabetical order by name (documented in
CREATE TABLE), so each case breaks one rule only, or drops the rules that would fire first.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests.support.builders import T1, insert, valid_rows
from tests.support.clock import MONDAY, T0

# (constraint, table, bad values, constraints to drop first because they would fire first)
CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("trade_outcomes_direction_check", "trade_outcomes", {"direction": "FLAT"}, ()),
    ("trade_outcomes_outcome_type_check", "trade_outcomes", {"outcome_type": "MEH"}, ()),
    ("trade_outcomes_entry_price_positive", "trade_outcomes", {"entry_price": Decimal(0)}, ()),
    ("trade_outcomes_exit_price_positive", "trade_outcomes", {"exit_price": Decimal(-1)}, ()),
    ("trade_outcomes_quantity_positive", "trade_outcomes", {"quantity": 0}, ()),
    ("trade_outcomes_commission_not_negative", "trade_outcomes", {"commission": Decimal(-1)}, ()),
    ("trade_outcomes_exit_after_entry", "trade_outcomes", {"exit_time": T0 - timedelta(hours=1)}, ()),
    ("trade_outcomes_duration_not_negative", "trade_outcomes", {"duration_seconds": -1}, ()),
    ("trade_fills_side_check", "trade_fills", {"side": "HOLD"}, ()),
    ("trade_fills_quantity_positive", "trade_fills", {"quantity": -5}, ()),
    ("trade_fills_price_positive", "trade_fills", {"price": Decimal(0)}, ()),
    ("trade_fills_intended_price_positive", "trade_fills", {"intended_price": Decimal(0)}, ()),
    ("trade_fills_commission_not_negative", "trade_fills", {"commission": Decimal("-0.01")}, ()),
    ("trade_fills_submitted_before_fill", "trade_fills",
     {"order_submitted_at": T1 + timedelta(seconds=1)}, ()),
    ("model_predictions_predicted_direction_check", "model_predictions",
     {"predicted_direction": "UP"}, ()),
    ("model_predictions_actual_direction_check", "model_predictions",
     {"actual_direction": "DOWN"}, ()),
    ("model_predictions_confidence_score_range", "model_predictions",
     {"confidence_score": Decimal("1.5")}, ()),
    ("model_predictions_horizon_positive", "model_predictions",
     {"prediction_horizon_minutes": 0}, ()),
    ("model_predictions_volatility_not_negative", "model_predictions",
     {"predicted_volatility": Decimal("-0.1")}, ()),
    ("model_predictions_feature_vector_object", "model_predictions",
     {"feature_vector": "[1, 2]"}, ()),
    ("market_conditions_prices_positive", "market_conditions", {"low": Decimal(0)}, ()),
    ("market_conditions_high_gte_low", "market_conditions",
     {"high": Decimal(8), "open": Decimal("8.5"), "close": Decimal("8.5")}, ()),
    ("market_conditions_open_close_within_range", "market_conditions", {"close": Decimal(12)}, ()),
    ("market_conditions_volume_not_negative", "market_conditions", {"volume": -1}, ()),
    ("market_conditions_rsi_range", "market_conditions", {"rsi_14": Decimal(101)}, ()),
    ("market_conditions_regime_check", "market_conditions", {"detected_regime": "sideways"}, ()),
    ("market_conditions_regime_confidence_range", "market_conditions",
     {"regime_confidence": Decimal("1.1")}, ()),
    ("market_conditions_correlation_range", "market_conditions",
     {"spy_correlation": Decimal("1.5")}, ()),
    ("strategy_performance_period_type_check", "strategy_performance", {"period_type": "YEAR"}, ()),
    ("strategy_performance_win_rate_range", "strategy_performance", {"win_rate": Decimal("1.2")}, ()),
    ("strategy_performance_trade_counts_add_up", "strategy_performance", {"winning_trades": 5}, ()),
    ("model_performance_status_check", "model_performance", {"status": "gone"}, ()),
    ("model_performance_ratios_range", "model_performance", {"precision": Decimal("1.5")}, ()),
    ("model_performance_calibration_range", "model_performance",
     {"brier_score": Decimal("1.5")}, ()),
    ("model_performance_samples_not_negative", "model_performance", {"training_samples": -1}, ()),
    ("model_performance_training_period_order", "model_performance",
     {"training_period_end": MONDAY - timedelta(days=61)}, ()),
    ("ab_tests_test_type_check", "ab_tests", {"test_type": "ui"}, ()),
    ("ab_tests_control_traffic_percent_check", "ab_tests",
     {"control_traffic_percent": 101, "treatment_traffic_percent": -1}, ()),
    # treatment out of range forces control out of range or the sum off 100: drop those first
    ("ab_tests_treatment_traffic_percent_check", "ab_tests", {"treatment_traffic_percent": 101},
     ("ab_tests_traffic_sums_to_100",)),
    ("ab_tests_status_check", "ab_tests", {"status": "paused"}, ()),
    ("ab_tests_traffic_sums_to_100", "ab_tests",
     {"control_traffic_percent": 40, "treatment_traffic_percent": 40}, ()),
    ("ab_tests_ended_after_started", "ab_tests", {"ended_at": T0 - timedelta(hours=1)}, ()),
    ("ab_tests_duration_positive", "ab_tests", {"scheduled_duration_hours": 0}, ()),
    ("optimization_queue_status_check", "optimization_queue", {"status": "stuck"}, ()),
    ("optimization_queue_priority_positive", "optimization_queue", {"priority": 0}, ()),
    ("optimization_queue_failures_not_negative", "optimization_queue",
     {"consecutive_failures": -1}, ()),
    ("optimization_queue_frequency_known", "optimization_queue", {"frequency": "monthly"}, ()),
    ("optimization_queue_run_number_not_negative", "optimization_queue", {"run_number": -1}, ()),
    ("retention_rules_keep_for_positive", "retention_rules", {"keep_for": timedelta(days=-1)}, ()),
    ("model_performance_source_check", "model_performance", {"source": "backtest"}, ()),
    ("rollup_pending_kind_check", "rollup_pending", {"kind": "bar"}, ()),
    ("command_runs_duration_not_negative", "command_runs", {"last_duration_seconds": -1.0}, ()),
    ("prediction_quarter_tallies_calls_check", "prediction_quarter_tallies", {"calls": 0}, ()),
    ("prediction_tallies_kept_one", "prediction_tallies_kept", {"one": False}, ()),
    ("model_day_calls_counts", "model_day_calls", {"right_calls": 11}, ()),
    ("archive_parts_month_first_day", "archive_parts", {"month": date(2020, 3, 2)}, ()),
    ("archive_parts_part_not_negative", "archive_parts", {"part": -1}, ()),
    ("archive_parts_rows_not_negative", "archive_parts", {"row_count": -1}, ()),
    ("archive_parts_slice_whole", "archive_parts", {"slice_start": T0}, ()),
    ("archive_slices_ordered", "archive_slices", {"slice_end": T0}, ()),
    ("archive_slices_live_not_negative", "archive_slices", {"live_rows": -1}, ()),
    ("archive_slices_removed_not_negative", "archive_slices", {"removed_rows": -1}, ()),
]

UNIQUE_KEYS = {
    "trade_outcomes": "trade_outcomes_pkey",
    "trade_fills": "trade_fills_pkey",
    "model_predictions": "model_predictions_pkey",
    "market_conditions": "market_conditions_pkey",
    "strategy_performance": "strategy_performance_strategy_id_model_version_period_type__key",
    "improvement_events": "improvement_events_event_id_key",
    "ab_tests": "ab_tests_test_id_key",
    "retention_rules": "retention_rules_pkey",
    "command_runs": "command_runs_pkey",
    # NULLs are equal here: tally 2's rows leave the directions and the regime empty
    "prediction_day_tallies": "prediction_day_tallies_key",
    "prediction_tallies_kept": "prediction_tallies_kept_pkey",
    "model_day_calls": "model_day_calls_pkey",
}


@pytest.fixture
def db(module_conn: asyncpg.Connection) -> asyncpg.Connection:
    return module_conn


async def test_the_valid_rows_are_valid(db: asyncpg.Connection) -> None:
    for table, row in valid_rows().items():
        await insert(db, table, row)


@pytest.mark.parametrize(("constraint", "table", "bad", "drop_first"), CASES,
                         ids=[case[0] for case in CASES])
async def test_check_rejects_bad_row_by_name(
    db: asyncpg.Connection, constraint: str, table: str, bad: dict[str, Any],
    drop_first: tuple[str, ...],
) -> None:
    for other in drop_first:
        await db.execute(f"ALTER TABLE {table} DROP CONSTRAINT {other}")
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await insert(db, table, {**valid_rows()[table], **bad})
    assert caught.value.constraint_name == constraint


async def test_every_check_constraint_has_a_case(db: asyncpg.Connection) -> None:
    names = {
        r["conname"] for r in await db.fetch(
            """
            SELECT con.conname FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            WHERE con.contype = 'c' AND c.relname <> 'schema_migrations'
            """
        )
    }
    assert names == {case[0] for case in CASES}


@pytest.mark.parametrize(("table", "key"), UNIQUE_KEYS.items(), ids=list(UNIQUE_KEYS))
async def test_unique_key_rejects_duplicate(db: asyncpg.Connection, table: str, key: str) -> None:
    row = valid_rows()[table]
    await insert(db, table, row)
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        await insert(db, table, row)
    # on a hypertable the violated index is the chunk's copy, named after the parent's
    assert (caught.value.constraint_name or "").endswith(key)
