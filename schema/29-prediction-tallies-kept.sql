-- 29: the live days' model figure tallies kept between rollup runs, so that a run recounts
-- only the quarter hours whose predictions changed. Until now each run recounted every
-- validated prediction of each touched day (schema/queries/rollup.sql prediction_tallies): a
-- live day's run grew with the day, 0.7 s to 9 s in ten minutes of the soak at 3,000
-- events/s, and a trade mark alone recounted its day.

-- A prediction mark's quarter hour: predicted_at binned to 15 minutes of UTC (every UTC day
-- holds 96 whole ones). NULL: the whole UTC day `day` (marks written before this migration,
-- `cie rollup --full`, trade and evaluation marks).
ALTER TABLE rollup_pending ADD COLUMN quarter TIMESTAMPTZ;

CREATE OR REPLACE FUNCTION rollup_mark_prediction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_pending (kind, model_version, day, quarter)
    VALUES ('prediction', NEW.model_version, (NEW.predicted_at AT TIME ZONE 'UTC')::date,
            date_bin('15 minutes', NEW.predicted_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'));
    RETURN NULL;
END
$$;

-- prediction_tallies' rows of each recounted quarter hour, by local day of the rollup's time
-- zone (a quarter hour that a local midnight cuts, in a zone whose offset is not whole
-- quarter hours, has rows for both days). A run replaces the rows of the quarter hours it
-- recounts and adds the difference to prediction_day_tallies.
CREATE TABLE prediction_quarter_tallies (
    model_version VARCHAR(20) NOT NULL,
    quarter TIMESTAMPTZ NOT NULL,
    day DATE NOT NULL,
    tally SMALLINT NOT NULL,  -- 1 (predicted, actual), 2 (confidence, right), 3 (regime, right)
    predicted_direction VARCHAR(7),
    actual_direction VARCHAR(7),
    confidence_score DECIMAL(5, 4),
    detected_regime VARCHAR(20),
    "right" BOOLEAN,
    calls BIGINT NOT NULL CONSTRAINT prediction_quarter_tallies_calls_check CHECK (calls > 0)
);
CREATE INDEX idx_prediction_quarter_tallies ON prediction_quarter_tallies (quarter, model_version);

-- Their sums per (model version, local day): what a day's figures read, at most 10,001
-- confidences x 2 outcomes plus a few rows however many predictions the day holds. A run
-- adds differences, then deletes the counts that reached zero; one below zero would mean the
-- two tables disagree, and fails the run (no CHECK: an upsert checks the row it proposes,
-- here the difference, before it finds the row to add it to).
CREATE TABLE prediction_day_tallies (
    model_version VARCHAR(20) NOT NULL,
    day DATE NOT NULL,
    tally SMALLINT NOT NULL,
    predicted_direction VARCHAR(7),
    actual_direction VARCHAR(7),
    confidence_score DECIMAL(5, 4),
    detected_regime VARCHAR(20),
    "right" BOOLEAN,
    calls BIGINT NOT NULL,
    CONSTRAINT prediction_day_tallies_key UNIQUE NULLS NOT DISTINCT
        (day, model_version, tally, predicted_direction, actual_direction, confidence_score,
         detected_regime, "right")
);
-- The counts a run brought to zero (or below), deleted after it.
CREATE INDEX idx_prediction_day_tallies_spent ON prediction_day_tallies (day) WHERE calls <= 0;

-- What the two tables keep (one row, none before the first run): days from kept_from on,
-- local to time_zone. A run keeps the last few days (the live ones, whose predictions are
-- still being validated) and recounts older days whole, as before, when they change: a year
-- of sparse days kept this way was three rows a prediction, and a backfill's run took 60 %
-- longer. A run in another zone, or one that would keep days before kept_from, starts over.
CREATE TABLE prediction_tallies_kept (
    one BOOLEAN PRIMARY KEY DEFAULT true CONSTRAINT prediction_tallies_kept_one CHECK (one),
    time_zone TEXT NOT NULL,
    kept_from DATE NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON prediction_quarter_tallies, prediction_day_tallies, prediction_tallies_kept
    TO cie_rollup;
