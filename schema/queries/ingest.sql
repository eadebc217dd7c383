-- Named queries of the ingest pipelines (consumers/ingest/pipelines/*.py).
-- Staging tables are temporary (one set per connection) and emptied at every commit; each has
-- its target's column types plus batch_seq, the event's position in its batch.

-- name: bars_stage
CREATE TEMP TABLE IF NOT EXISTS stage_market_conditions ON COMMIT DELETE ROWS AS
SELECT symbol, timestamp, open, high, low, close, volume, atr_14, rsi_14, ema_20, ema_50,
       bb_upper, bb_lower, macd_line, macd_signal, volatility_20d, vix, detected_regime,
       regime_confidence, spy_correlation, sector_correlation, 0::integer AS batch_seq
FROM market_conditions WITH NO DATA;

-- name: bars_upsert
-- Last write wins: of several versions of one bar in a batch the latest is kept, and a stored
-- bar is replaced only when something changed (a plain redelivery writes nothing).
INSERT INTO market_conditions (
    symbol, timestamp, open, high, low, close, volume, atr_14, rsi_14, ema_20, ema_50,
    bb_upper, bb_lower, macd_line, macd_signal, volatility_20d, vix, detected_regime,
    regime_confidence, spy_correlation, sector_correlation)
SELECT DISTINCT ON (symbol, timestamp)
    symbol, timestamp, open, high, low, close, volume, atr_14, rsi_14, ema_20, ema_50,
    bb_upper, bb_lower, macd_line, macd_signal, volatility_20d, vix, detected_regime,
    regime_confidence, spy_correlation, sector_correlation
FROM stage_market_conditions
ORDER BY symbol, timestamp, batch_seq DESC
ON CONFLICT (symbol, timestamp) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, atr_14 = EXCLUDED.atr_14, rsi_14 = EXCLUDED.rsi_14,
    ema_20 = EXCLUDED.ema_20, ema_50 = EXCLUDED.ema_50, bb_upper = EXCLUDED.bb_upper,
    bb_lower = EXCLUDED.bb_lower, macd_line = EXCLUDED.macd_line,
    macd_signal = EXCLUDED.macd_signal, volatility_20d = EXCLUDED.volatility_20d,
    vix = EXCLUDED.vix, detected_regime = EXCLUDED.detected_regime,
    regime_confidence = EXCLUDED.regime_confidence, spy_correlation = EXCLUDED.spy_correlation,
    sector_correlation = EXCLUDED.sector_correlation
WHERE (market_conditions.open, market_conditions.high, market_conditions.low,
       market_conditions.close, market_conditions.volume, market_conditions.atr_14,
       market_conditions.rsi_14, market_conditions.ema_20, market_conditions.ema_50,
       market_conditions.bb_upper, market_conditions.bb_lower, market_conditions.macd_line,
       market_conditions.macd_signal, market_conditions.volatility_20d, market_conditions.vix,
       market_conditions.detected_regime, market_conditions.regime_confidence,
       market_conditions.spy_correlation, market_conditions.sector_correlation)
   IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
       EXCLUDED.atr_14, EXCLUDED.rsi_14, EXCLUDED.ema_20, EXCLUDED.ema_50, EXCLUDED.bb_upper,
       EXCLUDED.bb_lower, EXCLUDED.macd_line, EXCLUDED.macd_signal, EXCLUDED.volatility_20d,
       EXCLUDED.vix, EXCLUDED.detected_regime, EXCLUDED.regime_confidence,
       EXCLUDED.spy_correlation, EXCLUDED.sector_correlation);

-- name: predictions_stage
CREATE TEMP TABLE IF NOT EXISTS stage_model_predictions ON COMMIT DELETE ROWS AS
SELECT prediction_id, model_version, model_type, symbol, predicted_at,
       prediction_horizon_minutes, predicted_direction, confidence_score, predicted_volatility,
       feature_vector, feature_hash, 0::integer AS batch_seq
FROM model_predictions WITH NO DATA;

-- name: predictions_upsert
-- Predictions are immutable: the first stored version stays, outcomes are the validator's.
INSERT INTO model_predictions (
    prediction_id, model_version, model_type, symbol, predicted_at, prediction_horizon_minutes,
    predicted_direction, confidence_score, predicted_volatility, feature_vector, feature_hash)
SELECT DISTINCT ON (prediction_id, predicted_at)
    prediction_id, model_version, model_type, symbol, predicted_at, prediction_horizon_minutes,
    predicted_direction, confidence_score, predicted_volatility, feature_vector, feature_hash
FROM stage_model_predictions
ORDER BY prediction_id, predicted_at, batch_seq
ON CONFLICT (prediction_id, predicted_at) DO NOTHING;

-- name: trade_outcomes_stage
CREATE TEMP TABLE IF NOT EXISTS stage_trade_outcomes ON COMMIT DELETE ROWS AS
SELECT trade_id, strategy_id, model_version, symbol, direction, entry_time, exit_time,
       entry_price, exit_price, quantity, gross_pnl, net_pnl, commission, slippage,
       duration_seconds, outcome_type, fill_latency_us_sum, fill_latency_count
FROM trade_outcomes WITH NO DATA;

-- name: fill_sources_stage
CREATE TEMP TABLE IF NOT EXISTS stage_trade_fill_sources ON COMMIT DELETE ROWS AS
SELECT fill_id, filled_at, topic, kafka_partition, kafka_offset, producer, traceparent
FROM trade_fill_sources WITH NO DATA;

-- name: fill_sources_upsert
-- The careful path's sources: a source stored without its fill (the fill's month archived
-- and removed, then the fill sent again) is replaced by the record that stores the fill now.
INSERT INTO trade_fill_sources
SELECT * FROM stage_trade_fill_sources
ON CONFLICT (fill_id, filled_at) DO UPDATE SET
    topic = EXCLUDED.topic, kafka_partition = EXCLUDED.kafka_partition,
    kafka_offset = EXCLUDED.kafka_offset, producer = EXCLUDED.producer,
    traceparent = EXCLUDED.traceparent;

-- name: fills_lock_trades
-- $1 is sorted: every consumer takes the locks in one order. The same statement (no extra
-- round trip) tells the trade rollup triggers that this transaction marks its changes itself,
-- with trade_outcomes_mark_rollup (schema/18-trade-rollup-marks-by-writer.sql).
SELECT pg_advisory_xact_lock(hashtextextended(trade_id::text, 0)),
       set_config('cie.writer_marks_rollup', 'on', true)
FROM unnest($1::uuid[]) AS trade_id;

-- name: fills_ledgers
SELECT fill_id, trade_id, strategy_id, model_version, symbol, side, quantity, price,
       commission, intended_price, filled_at, order_submitted_at
FROM trade_fills
WHERE trade_id = ANY($1::uuid[])
ORDER BY trade_id, filled_at, fill_id;

-- name: fills_owners
-- The stored fills with these fill ids (and, for chunk exclusion, these times): the trade
-- each belongs to. Only read when copying a batch's fills met a key stored under another trade.
SELECT fill_id, trade_id
FROM trade_fills
WHERE fill_id = ANY($1::uuid[]) AND filled_at = ANY($2::timestamptz[]);

-- name: trade_outcomes_mark_rollup
-- What the rollup must recompute after this flush, one row per (strategy, model version,
-- UTC exit day) instead of the triggers' one per trade: the stored rows of the trades about
-- to be re-derived ($1, read before they change: a moved or reopened trade leaves its old
-- day) and the closed trades' new values ($2 strategies, $3 model versions, $4 days).
INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
SELECT DISTINCT 'trade', strategy_id, model_version, day
FROM (SELECT strategy_id, model_version, (exit_time AT TIME ZONE 'UTC')::date AS day
      FROM trade_outcomes
      WHERE trade_id = ANY($1::uuid[]) AND exit_time IS NOT NULL
      UNION ALL
      SELECT * FROM unnest($2::text[], $3::text[], $4::date[])) AS changed;

-- name: trade_outcomes_rekey
-- A late fill earlier than the first one moves entry_time, which is part of the key.
DELETE FROM trade_outcomes AS o
USING stage_trade_outcomes AS s
WHERE o.trade_id = s.trade_id AND o.entry_time <> s.entry_time;

-- name: trade_outcomes_upsert
-- Derived columns only: the validator's excursions survive a re-derivation.
INSERT INTO trade_outcomes (
    trade_id, strategy_id, model_version, symbol, direction, entry_time, exit_time,
    entry_price, exit_price, quantity, gross_pnl, net_pnl, commission, slippage,
    duration_seconds, outcome_type, fill_latency_us_sum, fill_latency_count)
SELECT trade_id, strategy_id, model_version, symbol, direction, entry_time, exit_time,
       entry_price, exit_price, quantity, gross_pnl, net_pnl, commission, slippage,
       duration_seconds, outcome_type, fill_latency_us_sum, fill_latency_count
FROM stage_trade_outcomes
ON CONFLICT (trade_id, entry_time) DO UPDATE SET
    strategy_id = EXCLUDED.strategy_id, model_version = EXCLUDED.model_version,
    symbol = EXCLUDED.symbol, direction = EXCLUDED.direction, exit_time = EXCLUDED.exit_time,
    entry_price = EXCLUDED.entry_price, exit_price = EXCLUDED.exit_price,
    quantity = EXCLUDED.quantity, gross_pnl = EXCLUDED.gross_pnl, net_pnl = EXCLUDED.net_pnl,
    commission = EXCLUDED.commission, slippage = EXCLUDED.slippage,
    duration_seconds = EXCLUDED.duration_seconds, outcome_type = EXCLUDED.outcome_type,
    fill_latency_us_sum = EXCLUDED.fill_latency_us_sum,
    fill_latency_count = EXCLUDED.fill_latency_count, updated_at = now();

-- name: applied_event_record
-- true when this event id is new (and now recorded); NULL when it was applied before.
INSERT INTO applied_events (event_id, event_type) VALUES ($1, $2)
ON CONFLICT (event_id) DO NOTHING
RETURNING true;

-- name: applied_event_forget
DELETE FROM applied_events WHERE event_id = $1;

-- name: improvement_insert
INSERT INTO improvement_events (
    event_id, event_type, event_timestamp, component_type, component_id, old_value, new_value,
    trigger_reason, performance_before, performance_after, improvement_metrics, automated,
    approved_by, approval_timestamp, can_rollback, rollback_timestamp)
VALUES ($1, $2, COALESCE($3, now()), $4, $5, $6::jsonb, $7::jsonb, $8, $9::jsonb, $10::jsonb,
        $11::jsonb, $12, $13, $14, $15, $16)
-- the event a service recorded itself and then published (consumers/improvement/announce.py)
ON CONFLICT (event_id) DO NOTHING;

-- name: model_evaluation_insert
INSERT INTO model_performance (
    model_version, model_type, evaluation_date, training_samples, testing_samples,
    training_period_start, training_period_end, accuracy, precision, recall, f1_score, auc_roc,
    brier_score, expected_calibration_error, trending_up_accuracy, trending_down_accuracy,
    ranging_accuracy, volatile_accuracy, feature_importance, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19::jsonb, $20);

-- name: ab_test_start
INSERT INTO ab_tests (
    test_id, test_name, control_version, treatment_version, test_type, control_traffic_percent,
    treatment_traffic_percent, started_at, scheduled_duration_hours, success_metric,
    minimum_improvement_percent, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'running')
ON CONFLICT (test_id) DO NOTHING;

-- name: ab_test_results
UPDATE ab_tests SET control_metrics = $2::jsonb, treatment_metrics = $3::jsonb,
    improvement_percent = COALESCE($4, improvement_percent), updated_at = now()
WHERE test_id = $1;

-- name: ab_test_conclude
UPDATE ab_tests SET status = $2, ended_at = $3, conclusion = $4,
    improvement_percent = COALESCE($5, improvement_percent), updated_at = now()
WHERE test_id = $1;

-- name: optimization_schedule
INSERT INTO optimization_queue (
    task_id, task_type, component_id, frequency, next_run_at, priority, config, enabled, status)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, 'pending')
ON CONFLICT (task_id) DO UPDATE SET
    task_type = EXCLUDED.task_type, component_id = EXCLUDED.component_id,
    frequency = EXCLUDED.frequency, next_run_at = EXCLUDED.next_run_at,
    priority = EXCLUDED.priority, config = EXCLUDED.config, enabled = EXCLUDED.enabled,
    status = 'pending', updated_at = now();

-- name: optimization_start
-- A worker took the run: $3 the run number from the task message (the scheduler's claim set
-- the task running). Without a run number (a worker that schedules itself) the start is what
-- makes a pending task running. A late start of a run already reported changes nothing.
UPDATE optimization_queue
SET status = 'running', last_run_at = $2,
    run_number = run_number + (status = 'pending')::int,
    claimed_at = CASE WHEN status = 'pending' THEN now() ELSE claimed_at END, updated_at = now()
WHERE task_id = $1
  AND CASE WHEN $3::int IS NULL THEN status IN ('pending', 'running')
           ELSE status = 'running' AND run_number = $3 END;

-- name: optimization_complete
-- The run ended well: back to pending at the next slot of the task's grid after completion
-- (or the worker's own next_run_at, $4). Only the running run ($5, when given) is completed.
UPDATE optimization_queue
SET status = 'pending', last_result = $3::jsonb, last_error = NULL, consecutive_failures = 0,
    next_run_at = COALESCE($4, optimization_next_slot(
        next_run_at, COALESCE(optimization_period(frequency), INTERVAL '24 hours'), $2)),
    last_run_at = $2, claimed_at = NULL, updated_at = now()
WHERE task_id = $1 AND status = 'running' AND ($5::int IS NULL OR run_number = $5);

-- name: optimization_fail
-- The run failed: recorded here; the scheduler's settle_failed decides between a retry with
-- backoff and disabling the task (a setting of the scheduler, not of every consumer).
UPDATE optimization_queue
SET status = 'failed', last_error = $3, consecutive_failures = consecutive_failures + 1,
    next_run_at = COALESCE($4, next_run_at), last_failed_at = $2,
    last_run_at = $2, claimed_at = NULL, updated_at = now()
WHERE task_id = $1 AND status = 'running' AND ($5::int IS NULL OR run_number = $5);

-- name: optimization_task_known
-- After a lifecycle event changed nothing: was its task unknown (refused) or the event stale?
SELECT EXISTS (SELECT 1 FROM optimization_queue WHERE task_id = $1);

-- name: positions_read
-- Where this group's partitions of a topic stand in the database (consumers/ingest/positions.py).
SELECT kafka_partition, next_offset
FROM ingest_positions
WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = ANY($3::integer[]);

-- name: positions_advance
-- In the transaction that writes the rows: each partition moves past them, but only from the
-- position the writer last read or wrote ($5, NULL: none stored). The partitions it returns
-- moved; a missing one was moved by another member meanwhile, and the writer rolls back.
INSERT INTO ingest_positions AS p (consumer_group, topic, kafka_partition, next_offset, from_offset)
SELECT $1, $2, m.kafka_partition, m.next_offset, m.from_offset
FROM unnest($3::integer[], $4::bigint[], $5::bigint[]) AS m(kafka_partition, next_offset, from_offset)
ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, from_offset = EXCLUDED.from_offset,
        written_at = now()
    WHERE p.next_offset IS NOT DISTINCT FROM EXCLUDED.from_offset
RETURNING kafka_partition;

-- name: rejections_store
-- Rows the database refused, stored with the position that passes them: after a crash before
-- the Kafka commit their dead letters are sent when the records are read again.
INSERT INTO ingest_rejections (consumer_group, topic, kafka_partition, kafka_offset,
                               error_class, reason)
SELECT $1, $2, r.kafka_partition, r.kafka_offset, r.error_class, r.reason
FROM unnest($3::integer[], $4::bigint[], $5::text[], $6::text[])
    AS r(kafka_partition, kafka_offset, error_class, reason)
ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO UPDATE
    SET error_class = EXCLUDED.error_class, reason = EXCLUDED.reason, rejected_at = now();

-- name: rejections_read
SELECT kafka_partition, kafka_offset, error_class, reason
FROM ingest_rejections
WHERE consumer_group = $1 AND topic = $2
  AND (kafka_partition, kafka_offset) IN (
      SELECT * FROM unnest($3::integer[], $4::bigint[]));
