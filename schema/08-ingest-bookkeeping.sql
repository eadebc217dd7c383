-- 08: what the consumers need to make redelivery harmless for state-changing events.

-- Ids of improvement-events already applied (A/B test and optimization lifecycle events,
-- model evaluations, improvement events): a redelivered event is recognised and skipped, so
-- e.g. consecutive_failures is never counted twice.
CREATE TABLE applied_events (
    event_id UUID PRIMARY KEY,
    event_type VARCHAR(30) NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- The seed's optimization_queue has no natural key; lifecycle events name their task by it.
ALTER TABLE optimization_queue ADD COLUMN task_id UUID;
ALTER TABLE optimization_queue ADD CONSTRAINT optimization_queue_task_id_key UNIQUE (task_id);

GRANT SELECT, INSERT, DELETE ON applied_events TO cie_ingest;
GRANT SELECT ON applied_events TO cie_analytics;
