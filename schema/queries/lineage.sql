-- Named queries of `cie trace` (consumers/ingest/lineage.py).

-- name: trace_fills
-- Every fill of the trade that $1 names (a fill_id, or a trade_id), in time order, with the
-- Kafka record each came from (NULL: stored before migration 26, or not read from Kafka).
WITH trade AS (
    SELECT trade_id FROM trade_fills WHERE fill_id = $1
    UNION
    SELECT $1
)
SELECT f.trade_id, f.fill_id, f.filled_at, f.side, f.quantity, f.price,
       s.topic, s.kafka_partition, s.kafka_offset, s.producer, s.traceparent
FROM trade_fills AS f
LEFT JOIN trade_fill_sources AS s USING (fill_id, filled_at)
WHERE f.trade_id IN (SELECT trade_id FROM trade)
ORDER BY f.trade_id, f.filled_at, s.kafka_offset;

-- name: trace_trade
SELECT trade_id, symbol, direction, entry_time, exit_time, quantity, net_pnl, outcome_type
FROM trade_outcomes
WHERE trade_id = $1;
