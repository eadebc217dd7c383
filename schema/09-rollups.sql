-- 09: what `cie rollup` needs to compute strategy_performance and model_performance
-- incrementally (definitions in README.md, "Rollups").

-- Which model_performance rows the rollup owns: 'live' rows are written by the rollup, one
-- per (model_version, evaluation_date); 'offline' rows arrive as model evaluation events and
-- the rollup fills only their live_* columns.
ALTER TABLE model_performance ADD COLUMN source VARCHAR(10) NOT NULL DEFAULT 'offline';
ALTER TABLE model_performance ADD CONSTRAINT model_performance_source_check
    CHECK (source IN ('offline', 'live'));
CREATE UNIQUE INDEX idx_model_performance_live
    ON model_performance (model_version, evaluation_date) WHERE source = 'live';

-- A trade's fill latencies, summable (the ingest derives them from the trade's ledger like
-- every other trade column), so the rollup's average fill time never joins the fills table.
ALTER TABLE trade_outcomes ADD COLUMN fill_latency_us_sum BIGINT NOT NULL DEFAULT 0;
ALTER TABLE trade_outcomes ADD COLUMN fill_latency_count INTEGER NOT NULL DEFAULT 0;
UPDATE trade_outcomes AS t
SET fill_latency_us_sum = f.us, fill_latency_count = f.n
FROM (SELECT trade_id,
             sum(round(extract(epoch FROM filled_at - order_submitted_at) * 1000000))::bigint
                 AS us,
             count(*) AS n
      FROM trade_fills WHERE order_submitted_at IS NOT NULL GROUP BY trade_id) AS f
WHERE f.trade_id = t.trade_id;

-- What changed since the last rollup: one row per change to a closed trade or to a
-- prediction's outcome, written by the triggers below in the writer's transaction. An
-- append-only log (no unique key), so a writer never waits on a rollup that is consuming it.
-- day: the UTC day of exit_time (trades), predicted_at (predictions) or evaluation_date (a
-- new offline evaluation, whose live columns the next run fills).
CREATE TABLE rollup_pending (
    id BIGSERIAL PRIMARY KEY,
    kind VARCHAR(11) NOT NULL CONSTRAINT rollup_pending_kind_check
        CHECK (kind IN ('trade', 'prediction', 'evaluation')),
    strategy_id VARCHAR(50),
    model_version VARCHAR(20) NOT NULL,
    day DATE NOT NULL
);

CREATE FUNCTION rollup_mark_trade() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.exit_time IS NOT NULL THEN
        INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
        VALUES ('trade', OLD.strategy_id, OLD.model_version,
                (OLD.exit_time AT TIME ZONE 'UTC')::date);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.exit_time IS NOT NULL THEN
        INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
        VALUES ('trade', NEW.strategy_id, NEW.model_version,
                (NEW.exit_time AT TIME ZONE 'UTC')::date);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION rollup_mark_prediction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_pending (kind, model_version, day)
    VALUES ('prediction', NEW.model_version, (NEW.predicted_at AT TIME ZONE 'UTC')::date);
    RETURN NULL;
END
$$;

CREATE FUNCTION rollup_mark_evaluation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_pending (kind, model_version, day)
    VALUES ('evaluation', NEW.model_version, NEW.evaluation_date);
    RETURN NULL;
END
$$;

-- Row triggers (TimescaleDB hypertables do not support statement triggers with transition
-- tables). The WHEN clauses keep the cost off writes that change nothing a rollup reads:
-- open trades, excursion updates, redelivered rows.
CREATE TRIGGER trade_outcomes_rollup_insert_delete
    AFTER INSERT OR DELETE ON trade_outcomes
    FOR EACH ROW EXECUTE FUNCTION rollup_mark_trade();
CREATE TRIGGER trade_outcomes_rollup_update
    AFTER UPDATE ON trade_outcomes
    FOR EACH ROW
    WHEN ((OLD.exit_time, OLD.net_pnl, OLD.gross_pnl, OLD.commission, OLD.slippage,
           OLD.quantity, OLD.outcome_type, OLD.strategy_id, OLD.model_version,
           OLD.fill_latency_us_sum, OLD.fill_latency_count)
          IS DISTINCT FROM
          (NEW.exit_time, NEW.net_pnl, NEW.gross_pnl, NEW.commission, NEW.slippage,
           NEW.quantity, NEW.outcome_type, NEW.strategy_id, NEW.model_version,
           NEW.fill_latency_us_sum, NEW.fill_latency_count))
    EXECUTE FUNCTION rollup_mark_trade();
CREATE TRIGGER model_predictions_rollup_insert
    AFTER INSERT ON model_predictions
    FOR EACH ROW WHEN (NEW.validated_at IS NOT NULL)
    EXECUTE FUNCTION rollup_mark_prediction();
CREATE TRIGGER model_predictions_rollup_update
    AFTER UPDATE ON model_predictions
    FOR EACH ROW
    WHEN ((OLD.validated_at, OLD.actual_direction, OLD.prediction_accuracy,
           OLD.confidence_score, OLD.predicted_direction)
          IS DISTINCT FROM
          (NEW.validated_at, NEW.actual_direction, NEW.prediction_accuracy,
           NEW.confidence_score, NEW.predicted_direction))
    EXECUTE FUNCTION rollup_mark_prediction();

CREATE TRIGGER model_performance_rollup_insert
    AFTER INSERT ON model_performance
    FOR EACH ROW WHEN (NEW.source = 'offline')
    EXECUTE FUNCTION rollup_mark_evaluation();

-- Data that was there before this migration is pending from the start.
INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
SELECT DISTINCT 'trade', strategy_id, model_version, (exit_time AT TIME ZONE 'UTC')::date
FROM trade_outcomes WHERE exit_time IS NOT NULL;
INSERT INTO rollup_pending (kind, model_version, day)
SELECT DISTINCT 'prediction', model_version, (predicted_at AT TIME ZONE 'UTC')::date
FROM model_predictions WHERE validated_at IS NOT NULL;

-- Writers mark changes through the triggers, as themselves. The rollup runs as the migration
-- owner, like `cie maintain` (it deletes consumed pending rows and emptied periods).
GRANT INSERT ON rollup_pending TO cie_ingest;
GRANT USAGE ON SEQUENCE rollup_pending_id_seq TO cie_ingest;
GRANT SELECT ON rollup_pending TO cie_analytics;
