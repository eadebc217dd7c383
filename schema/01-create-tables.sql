-- 01: the seed's eight tables plus trade_fills, on plain PostgreSQL and TimescaleDB alike.
-- Deviations from ../shared/seed/analytics-database-schema.md are listed, with reasons, in
-- schema/README.md. Seed CHECKs keep PostgreSQL's default names (<table>_<column>_check);
-- added guard rails are named <table>_<rule>.

-- Trade outcomes, derived from the fill ledger (trade_fills). Hypertable on entry_time.
CREATE TABLE trade_outcomes (
    id BIGSERIAL NOT NULL,
    trade_id UUID NOT NULL,

    strategy_id VARCHAR(50) NOT NULL,
    model_version VARCHAR(20) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    direction VARCHAR(5) NOT NULL
        CONSTRAINT trade_outcomes_direction_check CHECK (direction IN ('LONG', 'SHORT')),
    entry_time TIMESTAMPTZ NOT NULL,
    exit_time TIMESTAMPTZ,

    entry_price DECIMAL(18, 8) NOT NULL,
    exit_price DECIMAL(18, 8),
    quantity INTEGER NOT NULL,

    gross_pnl DECIMAL(18, 4),
    net_pnl DECIMAL(18, 4),
    commission DECIMAL(18, 4) DEFAULT 0,
    slippage DECIMAL(18, 8) DEFAULT 0,

    duration_seconds INTEGER,
    max_favorable_excursion DECIMAL(18, 4),
    max_adverse_excursion DECIMAL(18, 4),

    outcome_type VARCHAR(20)
        CONSTRAINT trade_outcomes_outcome_type_check
        CHECK (outcome_type IN ('WIN', 'LOSS', 'BREAKEVEN', 'OPEN')),

    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT trade_outcomes_pkey PRIMARY KEY (trade_id, entry_time),
    CONSTRAINT trade_outcomes_entry_price_positive CHECK (entry_price > 0),
    CONSTRAINT trade_outcomes_exit_price_positive CHECK (exit_price > 0),
    CONSTRAINT trade_outcomes_quantity_positive CHECK (quantity > 0),
    CONSTRAINT trade_outcomes_commission_not_negative CHECK (commission >= 0),
    CONSTRAINT trade_outcomes_exit_after_entry CHECK (exit_time >= entry_time),
    CONSTRAINT trade_outcomes_duration_not_negative CHECK (duration_seconds >= 0)
);

-- Every execution as received (addition to the seed): the ledger trade_outcomes is derived from.
CREATE TABLE trade_fills (
    fill_id UUID NOT NULL,
    trade_id UUID NOT NULL,
    strategy_id VARCHAR(50) NOT NULL,
    model_version VARCHAR(20) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    side VARCHAR(4) NOT NULL CONSTRAINT trade_fills_side_check CHECK (side IN ('BUY', 'SELL')),
    quantity INTEGER NOT NULL,
    price DECIMAL(18, 8) NOT NULL,
    commission DECIMAL(18, 4) NOT NULL DEFAULT 0,
    intended_price DECIMAL(18, 8),
    filled_at TIMESTAMPTZ NOT NULL,
    order_submitted_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT trade_fills_pkey PRIMARY KEY (fill_id, filled_at),
    CONSTRAINT trade_fills_quantity_positive CHECK (quantity > 0),
    CONSTRAINT trade_fills_price_positive CHECK (price > 0),
    CONSTRAINT trade_fills_intended_price_positive CHECK (intended_price > 0),
    CONSTRAINT trade_fills_commission_not_negative CHECK (commission >= 0),
    CONSTRAINT trade_fills_submitted_before_fill CHECK (order_submitted_at <= filled_at)
);

-- Every prediction made by models. Hypertable on predicted_at.
CREATE TABLE model_predictions (
    id BIGSERIAL NOT NULL,
    prediction_id UUID NOT NULL,

    model_version VARCHAR(20) NOT NULL,
    model_type VARCHAR(30) NOT NULL,

    symbol VARCHAR(10) NOT NULL,
    predicted_at TIMESTAMPTZ NOT NULL,
    prediction_horizon_minutes INTEGER NOT NULL,

    predicted_direction VARCHAR(7),
    confidence_score DECIMAL(5, 4),
    predicted_volatility DECIMAL(10, 6),

    feature_vector JSONB NOT NULL,
    feature_hash VARCHAR(64),

    actual_direction VARCHAR(7),
    actual_return DECIMAL(18, 8),
    prediction_accuracy BOOLEAN,

    validated_at TIMESTAMPTZ,

    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT model_predictions_pkey PRIMARY KEY (prediction_id, predicted_at),
    CONSTRAINT model_predictions_predicted_direction_check
        CHECK (predicted_direction IN ('LONG', 'SHORT', 'NEUTRAL')),
    CONSTRAINT model_predictions_actual_direction_check
        CHECK (actual_direction IN ('LONG', 'SHORT', 'NEUTRAL')),
    CONSTRAINT model_predictions_confidence_score_range
        CHECK (confidence_score BETWEEN 0 AND 1),
    CONSTRAINT model_predictions_horizon_positive CHECK (prediction_horizon_minutes > 0),
    CONSTRAINT model_predictions_volatility_not_negative CHECK (predicted_volatility >= 0),
    CONSTRAINT model_predictions_feature_vector_object
        CHECK (jsonb_typeof(feature_vector) = 'object')
);

-- Bars with indicators and the detected regime. Hypertable on "timestamp".
CREATE TABLE market_conditions (
    id BIGSERIAL NOT NULL,

    symbol VARCHAR(10) NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,

    open DECIMAL(18, 8) NOT NULL,
    high DECIMAL(18, 8) NOT NULL,
    low DECIMAL(18, 8) NOT NULL,
    close DECIMAL(18, 8) NOT NULL,
    volume BIGINT NOT NULL,

    atr_14 DECIMAL(18, 8),
    rsi_14 DECIMAL(5, 2),
    ema_20 DECIMAL(18, 8),
    ema_50 DECIMAL(18, 8),
    bb_upper DECIMAL(18, 8),
    bb_lower DECIMAL(18, 8),
    macd_line DECIMAL(18, 8),
    macd_signal DECIMAL(18, 8),

    volatility_20d DECIMAL(10, 6),
    vix DECIMAL(8, 4),

    detected_regime VARCHAR(20),
    regime_confidence DECIMAL(5, 4),

    spy_correlation DECIMAL(4, 3),
    sector_correlation DECIMAL(4, 3),

    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT market_conditions_pkey PRIMARY KEY (symbol, timestamp),
    CONSTRAINT market_conditions_prices_positive
        CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0),
    CONSTRAINT market_conditions_high_gte_low CHECK (high >= low),
    CONSTRAINT market_conditions_open_close_within_range
        CHECK (open BETWEEN low AND high AND close BETWEEN low AND high),
    CONSTRAINT market_conditions_volume_not_negative CHECK (volume >= 0),
    CONSTRAINT market_conditions_rsi_range CHECK (rsi_14 BETWEEN 0 AND 100),
    CONSTRAINT market_conditions_regime_check
        CHECK (detected_regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    CONSTRAINT market_conditions_regime_confidence_range
        CHECK (regime_confidence BETWEEN 0 AND 1),
    CONSTRAINT market_conditions_correlation_range
        CHECK (spy_correlation BETWEEN -1 AND 1 AND sector_correlation BETWEEN -1 AND 1)
);

-- Aggregated performance per strategy, model version and period.
CREATE TABLE strategy_performance (
    id BIGSERIAL PRIMARY KEY,

    strategy_id VARCHAR(50) NOT NULL,
    model_version VARCHAR(20) NOT NULL,
    period_type VARCHAR(10) NOT NULL
        CONSTRAINT strategy_performance_period_type_check
        CHECK (period_type IN ('DAY', 'WEEK', 'MONTH')),
    period_start DATE NOT NULL,

    total_trades INTEGER DEFAULT 0,
    winning_trades INTEGER DEFAULT 0,
    losing_trades INTEGER DEFAULT 0,
    breakeven_trades INTEGER DEFAULT 0,

    gross_profit DECIMAL(18, 4) DEFAULT 0,
    gross_loss DECIMAL(18, 4) DEFAULT 0,
    net_pnl DECIMAL(18, 4) DEFAULT 0,
    total_commission DECIMAL(18, 4) DEFAULT 0,

    win_rate DECIMAL(5, 4),
    profit_factor DECIMAL(8, 4),
    avg_win DECIMAL(18, 4),
    avg_loss DECIMAL(18, 4),
    avg_trade DECIMAL(18, 4),
    largest_win DECIMAL(18, 4),
    largest_loss DECIMAL(18, 4),

    max_drawdown DECIMAL(8, 4),
    max_drawdown_duration_days INTEGER,
    sharpe_ratio DECIMAL(8, 4),
    sortino_ratio DECIMAL(8, 4),
    calmar_ratio DECIMAL(8, 4),

    avg_slippage DECIMAL(18, 8),
    avg_fill_time_ms INTEGER,

    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    UNIQUE (strategy_id, model_version, period_type, period_start),
    CONSTRAINT strategy_performance_win_rate_range CHECK (win_rate BETWEEN 0 AND 1),
    CONSTRAINT strategy_performance_trade_counts_add_up CHECK (
        total_trades >= 0 AND winning_trades >= 0 AND losing_trades >= 0
        AND breakeven_trades >= 0
        AND winning_trades + losing_trades + breakeven_trades <= total_trades
    )
);

-- ML model performance: offline evaluations plus live figures backfilled by the rollup.
CREATE TABLE model_performance (
    id BIGSERIAL PRIMARY KEY,

    model_version VARCHAR(20) NOT NULL,
    model_type VARCHAR(30) NOT NULL,
    evaluation_date DATE NOT NULL,

    training_samples INTEGER,
    testing_samples INTEGER,
    training_period_start DATE,
    training_period_end DATE,

    accuracy DECIMAL(5, 4),
    precision DECIMAL(5, 4),
    recall DECIMAL(5, 4),
    f1_score DECIMAL(5, 4),
    auc_roc DECIMAL(5, 4),

    brier_score DECIMAL(6, 5),
    expected_calibration_error DECIMAL(6, 5),

    trending_up_accuracy DECIMAL(5, 4),
    trending_down_accuracy DECIMAL(5, 4),
    ranging_accuracy DECIMAL(5, 4),
    volatile_accuracy DECIMAL(5, 4),

    feature_importance JSONB,

    live_accuracy DECIMAL(5, 4),
    live_pnl_contribution DECIMAL(18, 4),

    status VARCHAR(20) DEFAULT 'evaluating'
        CONSTRAINT model_performance_status_check
        CHECK (status IN ('evaluating', 'staging', 'production', 'retired')),

    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT model_performance_ratios_range CHECK (
        accuracy BETWEEN 0 AND 1 AND precision BETWEEN 0 AND 1 AND recall BETWEEN 0 AND 1
        AND f1_score BETWEEN 0 AND 1 AND auc_roc BETWEEN 0 AND 1
        AND trending_up_accuracy BETWEEN 0 AND 1 AND trending_down_accuracy BETWEEN 0 AND 1
        AND ranging_accuracy BETWEEN 0 AND 1 AND volatile_accuracy BETWEEN 0 AND 1
        AND live_accuracy BETWEEN 0 AND 1
    ),
    CONSTRAINT model_performance_calibration_range CHECK (
        brier_score BETWEEN 0 AND 1 AND expected_calibration_error BETWEEN 0 AND 1
    ),
    CONSTRAINT model_performance_samples_not_negative
        CHECK (training_samples >= 0 AND testing_samples >= 0),
    CONSTRAINT model_performance_training_period_order
        CHECK (training_period_end >= training_period_start)
);

-- Audit log of every system improvement. event_id (addition) de-duplicates redelivered events.
CREATE TABLE improvement_events (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL,

    event_type VARCHAR(30) NOT NULL,
    event_timestamp TIMESTAMPTZ DEFAULT NOW(),

    component_type VARCHAR(30) NOT NULL,
    component_id VARCHAR(50) NOT NULL,
    old_value JSONB,
    new_value JSONB,

    trigger_reason VARCHAR(100),
    performance_before JSONB,
    performance_after JSONB,
    improvement_metrics JSONB,

    automated BOOLEAN DEFAULT TRUE,
    approved_by VARCHAR(50),
    approval_timestamp TIMESTAMPTZ,

    can_rollback BOOLEAN DEFAULT TRUE,
    rollback_timestamp TIMESTAMPTZ,

    discord_notified BOOLEAN DEFAULT FALSE,
    notification_message_id VARCHAR(100),

    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT improvement_events_event_id_key UNIQUE (event_id)
);

-- Active and historical A/B tests.
CREATE TABLE ab_tests (
    id BIGSERIAL PRIMARY KEY,

    test_id UUID NOT NULL UNIQUE,
    test_name VARCHAR(100) NOT NULL,

    control_version VARCHAR(20) NOT NULL,
    treatment_version VARCHAR(20) NOT NULL,
    test_type VARCHAR(20) NOT NULL
        CONSTRAINT ab_tests_test_type_check CHECK (test_type IN ('model', 'strategy', 'params')),

    control_traffic_percent INTEGER NOT NULL
        CONSTRAINT ab_tests_control_traffic_percent_check
        CHECK (control_traffic_percent BETWEEN 0 AND 100),
    treatment_traffic_percent INTEGER NOT NULL
        CONSTRAINT ab_tests_treatment_traffic_percent_check
        CHECK (treatment_traffic_percent BETWEEN 0 AND 100),

    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    scheduled_duration_hours INTEGER DEFAULT 48,

    success_metric VARCHAR(50) NOT NULL,
    minimum_improvement_percent DECIMAL(5, 2) DEFAULT 5.0,

    control_metrics JSONB,
    treatment_metrics JSONB,
    improvement_percent DECIMAL(6, 2),

    status VARCHAR(20) DEFAULT 'running'
        CONSTRAINT ab_tests_status_check
        CHECK (status IN ('running', 'promoted', 'rejected', 'rollback')),
    conclusion VARCHAR(200),

    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT ab_tests_traffic_sums_to_100
        CHECK (control_traffic_percent + treatment_traffic_percent = 100),
    CONSTRAINT ab_tests_ended_after_started CHECK (ended_at >= started_at),
    CONSTRAINT ab_tests_duration_positive CHECK (scheduled_duration_hours > 0)
);

-- Queue for recurring optimization tasks.
CREATE TABLE optimization_queue (
    id BIGSERIAL PRIMARY KEY,

    task_type VARCHAR(30) NOT NULL,
    component_id VARCHAR(50) NOT NULL,

    frequency VARCHAR(20) NOT NULL,
    last_run_at TIMESTAMPTZ,
    next_run_at TIMESTAMPTZ NOT NULL,

    status VARCHAR(20) DEFAULT 'pending'
        CONSTRAINT optimization_queue_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    priority INTEGER DEFAULT 5,

    last_result JSONB,
    last_error TEXT,
    consecutive_failures INTEGER DEFAULT 0,

    config JSONB NOT NULL,

    enabled BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT optimization_queue_priority_positive CHECK (priority >= 1),
    CONSTRAINT optimization_queue_failures_not_negative CHECK (consecutive_failures >= 0)
);

-- How long raw rows are kept: read by 04-retention-policies.sql (TimescaleDB) and by
-- `cie maintain` (plain PostgreSQL), so both paths keep the same rules. Addition to the seed.
CREATE TABLE retention_rules (
    table_name TEXT PRIMARY KEY,
    time_column TEXT NOT NULL,
    keep_for INTERVAL NOT NULL CONSTRAINT retention_rules_keep_for_positive
        CHECK (keep_for > INTERVAL '0')
);

INSERT INTO retention_rules (table_name, time_column, keep_for) VALUES
    ('market_conditions', 'timestamp', INTERVAL '2 years'),
    ('trade_outcomes', 'entry_time', INTERVAL '5 years'),
    ('trade_fills', 'filled_at', INTERVAL '5 years'),
    ('model_predictions', 'predicted_at', INTERVAL '3 years'),
    -- the daily summaries outlive the raw bars they summarise (seed: archival strategy)
    ('market_daily_summary', 'day', INTERVAL '10 years');
