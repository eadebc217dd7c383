-- cie: requires timescaledb
-- 05: native compression (the seed's next step). segmentby = the column most queries filter
-- on, so a compressed chunk still answers "one symbol / one strategy" cheaply; orderby = time,
-- newest first, like the indexes. compress_after leaves room for the writes each table still
-- gets after the fact: bar corrections, validator backfills, open trades' excursions.

ALTER TABLE market_conditions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'timestamp DESC'
);
SELECT add_compression_policy('market_conditions', compress_after => INTERVAL '7 days');

ALTER TABLE model_predictions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'predicted_at DESC'
);
SELECT add_compression_policy('model_predictions', compress_after => INTERVAL '30 days');

ALTER TABLE trade_outcomes SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'strategy_id',
    timescaledb.compress_orderby = 'entry_time DESC'
);
SELECT add_compression_policy('trade_outcomes', compress_after => INTERVAL '90 days');

ALTER TABLE trade_fills SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'strategy_id',
    timescaledb.compress_orderby = 'filled_at DESC'
);
SELECT add_compression_policy('trade_fills', compress_after => INTERVAL '90 days');
