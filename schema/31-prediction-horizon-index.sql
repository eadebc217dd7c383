-- 31: an index on each prediction's horizon end, so that the validator's bar-driven path finds
-- the predictions a batch of bars can change in time proportional to the batch. Until now it
-- found those whose horizon ends at the batch's bars, and the unvalidated ones its bars now
-- cover, by reading every prediction of the batch's symbols made within the longest horizon
-- (a day) before them: a batch's cost grew with the predictions stored, 47 ms with half an
-- hour of them to 309 ms with six hours (bench/README.md, the validator), and in the soak a
-- validator that fell behind never caught up.
--
-- The horizon end in UTC, as a timestamp: timestamptz + interval is only STABLE (a day's
-- length depends on the time zone), timestamp + interval of minutes is IMMUTABLE, and an
-- index needs that. (validated_at IS NULL) before it lets one index serve both lookups: the
-- horizons ending in a range (either value) and the unvalidated ones (true). A validation
-- changes that key, as it already changed the seed's partial index on validated_at: one more
-- index entry for an update that was never HOT.
--
-- On a large table the build blocks writes to model_predictions while it runs. A DBA can
-- build it first with CREATE INDEX CONCURRENTLY (plain) or WITH
-- (timescaledb.transaction_per_chunk) (TimescaleDB), by this name: this file then does nothing.
CREATE INDEX IF NOT EXISTS idx_model_predictions_horizon ON model_predictions (
    symbol, (validated_at IS NULL),
    ((predicted_at AT TIME ZONE 'UTC') + make_interval(mins => prediction_horizon_minutes)));
