-- 22: whether an improvement event was announced on Discord is the notifier's to record
-- (14). Until now the improvement-event contract carried discord_notified and
-- notification_message_id, and cie_ingest could INSERT and UPDATE every column of
-- improvement_events: a compromised producer (or the ingest login) could mark an event as
-- announced and the notifier would never post it. The contract no longer carries them, and
-- cie_ingest may insert only the event's own columns and update none (it never updates an
-- event: a redelivered one is skipped, ON CONFLICT DO NOTHING).
REVOKE INSERT, UPDATE ON improvement_events FROM cie_ingest;
GRANT INSERT (event_id, event_type, event_timestamp, component_type, component_id, old_value,
              new_value, trigger_reason, performance_before, performance_after,
              improvement_metrics, automated, approved_by, approval_timestamp, can_rollback,
              rollback_timestamp)
    ON improvement_events TO cie_ingest;
