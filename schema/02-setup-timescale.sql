-- cie: requires timescaledb
-- 02: the time-series tables become hypertables with the seed's chunk intervals.
-- create_default_indexes => false: 03-create-indexes.sql creates the same indexes on both
-- paths, and TimescaleDB's default time index would duplicate idx_*_time.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('market_conditions', by_range('timestamp', INTERVAL '1 day'),
                         create_default_indexes => false);
SELECT create_hypertable('trade_outcomes', by_range('entry_time', INTERVAL '1 week'),
                         create_default_indexes => false);
SELECT create_hypertable('model_predictions', by_range('predicted_at', INTERVAL '1 week'),
                         create_default_indexes => false);
SELECT create_hypertable('trade_fills', by_range('filled_at', INTERVAL '1 week'),
                         create_default_indexes => false);
