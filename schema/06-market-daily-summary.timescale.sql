-- cie: requires timescaledb
-- 06: daily market summary per symbol, kept after raw bars expire (seed: archival strategy).
-- A continuous aggregate here; 06-market-daily-summary.plain.sql builds the same relation as a
-- table that `cie maintain` refreshes. Days are UTC days. materialized_only: both paths show
-- what the last refresh saw, so queries behave the same on either.

CREATE MATERIALIZED VIEW market_daily_summary
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT
    symbol,
    time_bucket(INTERVAL '1 day', timestamp) AS day,
    first(open, timestamp) AS open,
    max(high) AS high,
    min(low) AS low,
    last(close, timestamp) AS close,
    sum(volume) AS volume,
    count(*) AS bar_count,
    avg(atr_14) AS avg_atr_14,
    avg(rsi_14) AS avg_rsi_14,
    avg(volatility_20d) AS avg_volatility_20d,
    avg(vix) AS avg_vix,
    avg(regime_confidence) AS avg_regime_confidence,
    -- the most frequent regime of the day; ties go to the first in alphabetical order
    mode() WITHIN GROUP (ORDER BY detected_regime) AS dominant_regime
FROM market_conditions
GROUP BY symbol, time_bucket(INTERVAL '1 day', timestamp)
WITH NO DATA;

-- Refresh the last 30 days every hour: late bars and corrections inside that window reach the
-- summary. The window stays far inside raw retention, so expired days are never recomputed.
SELECT add_continuous_aggregate_policy('market_daily_summary',
    start_offset => INTERVAL '30 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 hour');

SELECT add_retention_policy('market_daily_summary',
    drop_after => (SELECT keep_for FROM retention_rules WHERE table_name = 'market_daily_summary'));
