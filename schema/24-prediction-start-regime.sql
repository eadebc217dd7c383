-- 24: the regime of a prediction's start bar, written by the validator with the outcome (it
-- finds that bar anyway), so that the rollup's live model figures read the predictions alone.
-- Until now each rollup run merged the touched days' predictions with their symbols' bars to
-- find the regimes: with bars many times a second that merge grew with the day (19 s a run
-- ten minutes into the soak). Values: a regime, 'none' (the start bar had none), or NULL (not
-- recorded: validated before this migration, or written by another writer): the rollup finds
-- those from the bars, as before, so no backfill is needed and old days' figures stand.
-- No CHECK constraint: TimescaleDB cannot add one to a hypertable with compression enabled;
-- the only writer copies market_conditions.detected_regime, which has one.
ALTER TABLE model_predictions ADD COLUMN start_regime VARCHAR(20);

-- A changed regime changes the live model figures: the row trigger marks it (other writers;
-- the validator marks what it writes itself).
DROP TRIGGER model_predictions_rollup_update ON model_predictions;
CREATE TRIGGER model_predictions_rollup_update
    AFTER UPDATE ON model_predictions
    FOR EACH ROW
    WHEN ((OLD.validated_at, OLD.actual_direction, OLD.prediction_accuracy,
           OLD.confidence_score, OLD.predicted_direction, OLD.start_regime)
          IS DISTINCT FROM
          (NEW.validated_at, NEW.actual_direction, NEW.prediction_accuracy,
           NEW.confidence_score, NEW.predicted_direction, NEW.start_regime)
          AND current_setting('cie.writer_marks_rollup', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rollup_mark_prediction();
