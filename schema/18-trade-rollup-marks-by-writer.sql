-- 18: the trade rollup triggers skip a transaction that sets cie.writer_marks_rollup to 'on',
-- as the prediction trigger does since 17. The fills consumer does: per flush it marks each
-- changed (strategy, model version, exit day) once, old values and new, in one statement
-- (ingest.sql, trade_outcomes_mark_rollup), instead of one PL/pgSQL call and row per trade.
-- Every other writer of trade_outcomes, and any session that does not say so, still gets the
-- triggers' marks.
DROP TRIGGER trade_outcomes_rollup_insert_delete ON trade_outcomes;
CREATE TRIGGER trade_outcomes_rollup_insert_delete
    AFTER INSERT OR DELETE ON trade_outcomes
    FOR EACH ROW
    WHEN (current_setting('cie.writer_marks_rollup', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rollup_mark_trade();
DROP TRIGGER trade_outcomes_rollup_update ON trade_outcomes;
CREATE TRIGGER trade_outcomes_rollup_update
    AFTER UPDATE ON trade_outcomes
    FOR EACH ROW
    WHEN ((OLD.exit_time, OLD.net_pnl, OLD.gross_pnl, OLD.commission, OLD.slippage,
           OLD.quantity, OLD.outcome_type, OLD.strategy_id, OLD.model_version,
           OLD.fill_latency_us_sum, OLD.fill_latency_count)
          IS DISTINCT FROM
          (NEW.exit_time, NEW.net_pnl, NEW.gross_pnl, NEW.commission, NEW.slippage,
           NEW.quantity, NEW.outcome_type, NEW.strategy_id, NEW.model_version,
           NEW.fill_latency_us_sum, NEW.fill_latency_count)
          AND current_setting('cie.writer_marks_rollup', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rollup_mark_trade();
