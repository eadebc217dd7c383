-- 14: the Discord notifier (`cie notify`, consumers/improvement/notifier.py): an outbox over
-- improvement_events. A notifier leases a batch of unnotified events, marks each one
-- "posting" (committed) before its POST, and records Discord's message id after it. The mark
-- is what makes a post happen at most once: an event marked and never recorded (the process
-- died, or Discord's answer was lost) is "in doubt" and is not posted again unless an
-- operator releases it (`cie notify --release EVENT_ID`). Additions to the seed.

ALTER TABLE improvement_events
    -- Which notifier holds the event, and until when (a notifier that dies lets it go).
    ADD COLUMN notify_lease_owner UUID,
    ADD COLUMN notify_lease_until TIMESTAMPTZ,
    -- Set, and committed, before the POST; cleared when Discord's answer says no message
    -- was created (429, 5xx, 4xx, connection refused).
    ADD COLUMN notify_posting_since TIMESTAMPTZ,
    ADD COLUMN notify_attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN notify_error TEXT,
    -- Not before: a retry's backoff after a 5xx; 'infinity' after a 4xx (a request Discord
    -- refuses is not retried until a notifier restarts, which is what a fix looks like).
    ADD COLUMN notify_after TIMESTAMPTZ;

-- The outbox's scan: the few events not yet notified, oldest first.
CREATE INDEX improvement_events_unnotified ON improvement_events (id)
    WHERE discord_notified IS NOT TRUE;

-- The notifier's own role: it reads the events and records their notification, nothing else.
DO $$
BEGIN
    CREATE ROLE cie_notifier NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cie_notifier;
GRANT SELECT ON improvement_events TO cie_notifier;
GRANT UPDATE (discord_notified, notification_message_id, notify_lease_owner, notify_lease_until,
              notify_posting_since, notify_attempts, notify_error, notify_after)
    ON improvement_events TO cie_notifier;
GRANT SELECT ON schema_migrations, command_runs TO cie_notifier;  -- start check, /metrics

-- The scheduler reads back the improvement events it records, to publish them
-- (consumers/improvement/announce.py).
GRANT SELECT ON improvement_events TO cie_scheduler;
