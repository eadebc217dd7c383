-- cie: requires timescaledb
-- 10: every raw day of market_conditions is summarised before retention drops it.
-- 06 refreshed market_daily_summary over the last 30 days only, so bars backfilled further
-- back were never summarised and vanished with their chunk at the 2-year retention. Now the
-- refresh window reaches back as far as raw bars are kept (the refresh only recomputes days
-- with invalidations, so the wide window costs nothing when nothing old changed), and raw
-- chunks are dropped one day later than that: a day leaves the refresh window a day before
-- its raw rows go, and is refreshed every hour in between. A bar older than the raw
-- retention lands in no refresh window: its day's stored summary stays the record.
-- Both follow retention_rules; re-run cie_schedule_market_data_jobs() after changing it.

CREATE FUNCTION cie_schedule_market_data_jobs() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    keep_raw interval := (SELECT keep_for FROM retention_rules
                          WHERE table_name = 'market_conditions');
BEGIN
    PERFORM remove_continuous_aggregate_policy('market_daily_summary', if_exists => true);
    PERFORM add_continuous_aggregate_policy('market_daily_summary',
        start_offset => keep_raw,
        end_offset => INTERVAL '1 hour',
        schedule_interval => INTERVAL '1 hour');
    PERFORM remove_retention_policy('market_conditions', if_exists => true);
    PERFORM add_retention_policy('market_conditions', drop_after => keep_raw + INTERVAL '1 day');
END
$$;

SELECT cie_schedule_market_data_jobs();
