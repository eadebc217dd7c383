-- cie: requires timescaledb
-- 27: trade_fill_sources partitioned like trade_fills (1-week chunks on filled_at), compressed
-- after 90 days like it (per topic, by offset: the coordinates are close together and compress
-- to a few bytes), and dropped after its retention rule by a plain policy (no archive: the
-- coordinates point into Kafka, which keeps a record days, not years).
SELECT create_hypertable('trade_fill_sources', by_range('filled_at', INTERVAL '1 week'),
                         create_default_indexes => false);
ALTER TABLE trade_fill_sources SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'topic, kafka_partition',
    timescaledb.compress_orderby = 'kafka_offset'
);
SELECT add_compression_policy('trade_fill_sources', compress_after => INTERVAL '90 days');
SELECT add_retention_policy('trade_fill_sources', drop_after => r.keep_for)
FROM retention_rules AS r WHERE r.table_name = 'trade_fill_sources';
