-- Named queries of the Discord notifier (consumers/improvement/notifier.py).

-- name: lease
-- Up to $1 events to post, oldest first, leased to notifier $2 for $3 seconds. Skipped: events
-- already notified, in doubt (posting_since set), leased by a live notifier, backing off, or
-- recorded more than $4 hours ago (a notifier started on an old table does not flood the
-- channel with history). SKIP LOCKED: notifiers side by side take different events.
WITH due AS (
    SELECT id FROM improvement_events
    WHERE discord_notified IS NOT TRUE AND notify_posting_since IS NULL
      AND (notify_lease_until IS NULL OR notify_lease_until < now())
      AND (notify_after IS NULL OR notify_after <= now())
      AND created_at >= now() - make_interval(hours => $4::int)
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE improvement_events AS e
SET notify_lease_owner = $2, notify_lease_until = now() + make_interval(secs => $3::int)
FROM due
WHERE e.id = due.id
RETURNING e.id, e.event_id, e.event_type, e.event_timestamp, e.component_type, e.component_id,
          e.old_value::text AS old_value, e.new_value::text AS new_value, e.trigger_reason,
          e.performance_before::text AS performance_before,
          e.performance_after::text AS performance_after,
          e.improvement_metrics::text AS improvement_metrics, e.automated, e.approved_by;

-- name: mark_posting
-- Just before the POST, committed: the attempt's number when this notifier still holds the
-- event and no other post of it began; NULL when not (the lease ran out, another took it).
UPDATE improvement_events
SET notify_posting_since = now(), notify_attempts = notify_attempts + 1
WHERE id = $1 AND notify_lease_owner = $2 AND notify_lease_until > now()
  AND notify_posting_since IS NULL AND discord_notified IS NOT TRUE
RETURNING notify_attempts;

-- name: record_posted
-- Discord created message $3: the event is notified.
UPDATE improvement_events
SET discord_notified = true, notification_message_id = $3, notify_posting_since = NULL,
    notify_lease_owner = NULL, notify_lease_until = NULL, notify_error = NULL,
    notify_after = NULL
WHERE id = $1 AND notify_lease_owner = $2;

-- name: record_not_posted
-- Discord's answer says no message was created: no longer posting; try again after $3
-- seconds ('infinity' when $3 is NULL: refused, retried after a restart), and why ($4).
UPDATE improvement_events
SET notify_posting_since = NULL, notify_lease_owner = NULL, notify_lease_until = NULL,
    notify_error = left($4, 500),
    notify_after = CASE WHEN $3::float8 IS NULL THEN 'infinity'::timestamptz
                        ELSE now() + make_interval(secs => $3::float8) END
WHERE id = $1 AND notify_lease_owner = $2;

-- name: record_in_doubt
-- The POST went out and no answer came back: the mark stays (never posted again unless
-- released), the lease ends now so the event counts as in doubt at once.
UPDATE improvement_events
SET notify_error = left($3, 500), notify_lease_until = now()
WHERE id = $1 AND notify_lease_owner = $2;

-- name: release_lease
-- Stopping (or a rate limit longer than the lease): events not yet marked go back.
UPDATE improvement_events
SET notify_lease_owner = NULL, notify_lease_until = NULL
WHERE notify_lease_owner = $1 AND notify_posting_since IS NULL AND discord_notified IS NOT TRUE;

-- name: retry_refused
-- At a notifier's start: events Discord refused (4xx) are tried again, as a restart is what
-- a fix (a new webhook, a new version) looks like.
UPDATE improvement_events SET notify_after = NULL
WHERE notify_after = 'infinity' AND discord_notified IS NOT TRUE;

-- name: release_in_doubt
-- An operator checked the channel: these events were not posted after all; post them.
UPDATE improvement_events
SET notify_posting_since = NULL, notify_lease_owner = NULL, notify_lease_until = NULL,
    notify_after = NULL
WHERE event_id = ANY($1::uuid[]) AND notify_posting_since IS NOT NULL
  AND discord_notified IS NOT TRUE
RETURNING event_id;

-- name: outbox_state
-- For the metrics and `cie notify --status`: events waiting (recorded within $1 hours: older
-- ones are never posted), refused, in doubt.
SELECT count(*) FILTER (WHERE notify_posting_since IS NULL
                          AND notify_after IS DISTINCT FROM 'infinity'
                          AND created_at >= now() - make_interval(hours => $1::int)) AS pending,
       count(*) FILTER (WHERE notify_after = 'infinity' AND notify_posting_since IS NULL)
           AS refused,
       count(*) FILTER (WHERE notify_posting_since IS NOT NULL
                          AND COALESCE(notify_lease_until, '-infinity') < now()) AS in_doubt
FROM improvement_events
WHERE discord_notified IS NOT TRUE;

-- name: unnotified
-- `cie notify --status`: the events refused or in doubt, with why.
SELECT event_id, event_type, component_id, created_at, notify_attempts, notify_error,
       CASE WHEN notify_posting_since IS NOT NULL THEN 'in doubt' ELSE 'refused' END AS state,
       notify_posting_since
FROM improvement_events
WHERE discord_notified IS NOT TRUE
  AND (notify_posting_since IS NOT NULL AND COALESCE(notify_lease_until, '-infinity') < now()
       OR notify_after = 'infinity' AND notify_posting_since IS NULL)
ORDER BY id;
