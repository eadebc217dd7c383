-- cie: requires plain
-- 06: the daily market summary on plain PostgreSQL: the same relation and columns as the
-- continuous aggregate in 06-market-daily-summary.timescale.sql, as a table that
-- `cie maintain` refreshes incrementally. Triggers record which (symbol, day) a write touched;
-- maintain recomputes exactly those days, so late bars and corrections are caught.

CREATE TABLE market_daily_summary (
    symbol VARCHAR(10) NOT NULL,
    day TIMESTAMPTZ NOT NULL,
    open NUMERIC,
    high NUMERIC,
    low NUMERIC,
    close NUMERIC,
    volume NUMERIC,
    bar_count BIGINT,
    avg_atr_14 NUMERIC,
    avg_rsi_14 NUMERIC,
    avg_volatility_20d NUMERIC,
    avg_vix NUMERIC,
    avg_regime_confidence NUMERIC,
    dominant_regime VARCHAR(20),
    PRIMARY KEY (symbol, day)
);

CREATE TABLE market_daily_summary_pending (
    symbol VARCHAR(10) NOT NULL,
    day TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, day)
);

-- Sorted inserts: concurrent writers take the pending rows' locks in one order (no deadlock).
CREATE FUNCTION market_daily_summary_mark_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO market_daily_summary_pending (symbol, day)
    SELECT DISTINCT symbol, date_trunc('day', timestamp, 'UTC')
    FROM touched_bars
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER market_conditions_mark_summary_pending_insert
    AFTER INSERT ON market_conditions
    REFERENCING NEW TABLE AS touched_bars
    FOR EACH STATEMENT EXECUTE FUNCTION market_daily_summary_mark_pending();

CREATE TRIGGER market_conditions_mark_summary_pending_update
    AFTER UPDATE ON market_conditions
    REFERENCING NEW TABLE AS touched_bars
    FOR EACH STATEMENT EXECUTE FUNCTION market_daily_summary_mark_pending();
