-- 25: each partition's position in the database, moved in the same transaction as the rows it
-- carries (consumers/ingest/positions.py): a record below it was written already, and a
-- replay after a crash or a rebalance skips it instead of writing it again. Kafka's committed
-- offset still follows (lag tools stay truthful); where the database holds no position (the
-- first start after this migration) Kafka's is all there is.
CREATE TABLE ingest_positions (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,  -- the first offset not written yet
    from_offset BIGINT,  -- the position the last write moved it from (NULL: none stored)
    written_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
) WITH (fillfactor = 50);  -- a few rows updated by every batch: room for HOT updates

-- Rows the database refused (a constraint, a ledger rule), stored in the transaction whose
-- position passes them, so that their dead letters are still sent if the process dies before
-- the Kafka transaction that sends them. `cie maintain` deletes them after a week.
CREATE TABLE ingest_rejections (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    error_class TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (consumer_group, topic, kafka_partition, kafka_offset)
);

GRANT SELECT, INSERT, UPDATE ON ingest_positions, ingest_rejections TO cie_ingest;
GRANT SELECT ON ingest_positions, ingest_rejections TO cie_analytics;
