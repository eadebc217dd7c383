-- 26: lineage. Each stored fill's source: the Kafka record that carried it (topic, partition,
-- offset) and the producer's `source` and `traceparent` headers when it sent them, written in
-- the transaction that stores the fill (consumers/ingest/pipelines/fills.py). A trade's chain
-- is its fills' sources: the opening fill (earliest filled_at: a late earlier fill re-keys the
-- trade and becomes it) and the latest received. `cie trace FILL_ID|TRADE_ID` prints it.
-- A table of its own rather than columns of trade_fills: the archive's checksum of a month
-- (cie_slice_content, migration 20) hashes each whole row, so new columns on trade_fills
-- would make every archived month differ from S3 and be exported again.
CREATE TABLE trade_fill_sources (
    fill_id UUID NOT NULL,
    filled_at TIMESTAMPTZ NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    producer TEXT,  -- the `source` header (CloudEvents' `ce_source`), when sent
    traceparent TEXT,  -- W3C trace context header, when sent
    -- the fill's key, time first: rows arrive in about time order, so the index grows at its
    -- right edge instead of at a random UUID's place (the cheaper write for every fill)
    PRIMARY KEY (filled_at, fill_id)
);

INSERT INTO retention_rules (table_name, time_column, keep_for)
VALUES ('trade_fill_sources', 'filled_at', INTERVAL '5 years');

GRANT SELECT, INSERT ON trade_fill_sources TO cie_ingest;
GRANT SELECT ON trade_fill_sources TO cie_analytics;
