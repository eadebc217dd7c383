-- 03: the seed's indexes, unchanged, plus the ones the consumers' queries need (marked).

CREATE INDEX idx_trade_outcomes_strategy ON trade_outcomes(strategy_id, entry_time DESC);
CREATE INDEX idx_trade_outcomes_model ON trade_outcomes(model_version, entry_time DESC);
CREATE INDEX idx_trade_outcomes_symbol ON trade_outcomes(symbol, entry_time DESC);
CREATE INDEX idx_trade_outcomes_time ON trade_outcomes(entry_time DESC);
-- addition: open trades are revisited by the validator as bars arrive
CREATE INDEX idx_trade_outcomes_open ON trade_outcomes(symbol, entry_time)
    WHERE exit_time IS NULL;
-- addition: rollups select closed trades by exit time
CREATE INDEX idx_trade_outcomes_exit ON trade_outcomes(exit_time DESC)
    WHERE exit_time IS NOT NULL;

-- addition: a trade's fills, in time order, to re-derive its outcome
CREATE INDEX idx_trade_fills_trade ON trade_fills(trade_id, filled_at);

CREATE INDEX idx_model_predictions_model ON model_predictions(model_version, predicted_at DESC);
CREATE INDEX idx_model_predictions_symbol ON model_predictions(symbol, predicted_at DESC);
CREATE INDEX idx_model_predictions_unvalidated ON model_predictions(validated_at)
    WHERE validated_at IS NULL;

CREATE INDEX idx_market_conditions_regime ON market_conditions(detected_regime, timestamp DESC);

CREATE INDEX idx_strategy_performance_strategy ON strategy_performance(strategy_id, period_start DESC);
CREATE INDEX idx_strategy_performance_model ON strategy_performance(model_version, period_start DESC);

CREATE INDEX idx_model_performance_version ON model_performance(model_version, evaluation_date DESC);
CREATE INDEX idx_model_performance_status ON model_performance(status);

CREATE INDEX idx_improvement_events_type ON improvement_events(event_type, event_timestamp DESC);
CREATE INDEX idx_improvement_events_component ON improvement_events(component_type, component_id);

CREATE INDEX idx_ab_tests_status ON ab_tests(status);
CREATE INDEX idx_ab_tests_running ON ab_tests(status, started_at) WHERE status = 'running';

CREATE INDEX idx_optimization_queue_next_run ON optimization_queue(next_run_at)
    WHERE enabled = TRUE AND status = 'pending';
CREATE INDEX idx_optimization_queue_status ON optimization_queue(status);
