-- Named queries of the announcer (consumers/improvement/announce.py).

-- name: events_by_id
-- The improvement events a decision just wrote (in its transaction), as their contract.
SELECT event_id, event_type, event_timestamp, component_type, component_id,
       old_value::text AS old_value, new_value::text AS new_value, trigger_reason,
       performance_before::text AS performance_before,
       performance_after::text AS performance_after,
       improvement_metrics::text AS improvement_metrics, automated
FROM improvement_events
WHERE event_id = ANY($1::uuid[])
ORDER BY id;
