-- 17: a writer that changes many predictions at once may mark what it changed itself, one row
-- per (model version, day) in the same statement, instead of one mark per row from the trigger:
-- it sets cie.writer_marks_rollup to 'on' for its transaction (SET LOCAL). The validator does;
-- every other writer, and any session that does not say so, still gets the trigger's marks.
-- The condition is in WHEN, so a skipped row costs no PL/pgSQL call (the trigger was a third
-- of the validator's write time).
DROP TRIGGER model_predictions_rollup_update ON model_predictions;
CREATE TRIGGER model_predictions_rollup_update
    AFTER UPDATE ON model_predictions
    FOR EACH ROW
    WHEN ((OLD.validated_at, OLD.actual_direction, OLD.prediction_accuracy,
           OLD.confidence_score, OLD.predicted_direction)
          IS DISTINCT FROM
          (NEW.validated_at, NEW.actual_direction, NEW.prediction_accuracy,
           NEW.confidence_score, NEW.predicted_direction)
          AND current_setting('cie.writer_marks_rollup', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rollup_mark_prediction();
