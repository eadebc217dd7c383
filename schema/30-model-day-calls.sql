-- 30: each model version's validated predictions and right calls per local day, kept by the
-- rollup with the live model figures, so that an offline evaluation's live_accuracy (the
-- share of right calls among the version's predictions since its date) sums days. Until now
-- each run counted every validated prediction since each evaluation's date: an evaluation a
-- month old made every run read a month of predictions. The days are local to the kept
-- tallies' time zone (prediction_tallies_kept, schema/29); when those start over, so does
-- this table, counted again from model_predictions. A day's row stays after retention
-- removes its predictions: live_accuracy goes on counting them.
CREATE TABLE model_day_calls (
    model_version VARCHAR(20) NOT NULL,
    day DATE NOT NULL,
    calls BIGINT NOT NULL,
    right_calls BIGINT NOT NULL,
    CONSTRAINT model_day_calls_pkey PRIMARY KEY (model_version, day),
    CONSTRAINT model_day_calls_counts CHECK (calls > 0 AND right_calls BETWEEN 0 AND calls)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON model_day_calls TO cie_rollup;
