-- Named queries of the optimization scheduler (consumers/improvement/scheduler.py).

-- name: claim_due
-- Due tasks, priority 1 first, then the longest overdue; $1 at most. SKIP LOCKED: schedulers
-- running side by side each take other tasks. The claim and the publish share one
-- transaction: a publish that fails rolls the claim back, and the next claim republishes the
-- same (task_id, run_number). A task written without a task_id gets one here, as every
-- message and report names its task by it.
WITH due AS (
    SELECT id FROM optimization_queue
    WHERE enabled AND status = 'pending' AND next_run_at <= now()
      AND optimization_period(frequency) IS NOT NULL
    ORDER BY priority, next_run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE optimization_queue AS task
SET status = 'running', run_number = task.run_number + 1, claimed_at = now(),
    task_id = COALESCE(task.task_id, gen_random_uuid()), updated_at = now()
FROM due
WHERE task.id = due.id
RETURNING task.task_id, task.run_number, task.task_type, task.component_id, task.frequency,
          task.priority, task.next_run_at AS scheduled_for, task.config::text AS config;

-- name: reap_stuck
-- Runs with no report within $1 seconds of their claim count as failed (the worker died,
-- or its report was lost); settle_failed then retries or disables them.
UPDATE optimization_queue
SET status = 'failed', consecutive_failures = consecutive_failures + 1,
    last_error = format('run %s: no report within %s seconds', run_number, $1::int),
    last_failed_at = now(), updated_at = now()
WHERE status = 'running' AND claimed_at < now() - make_interval(secs => $1::int)
RETURNING task_id, run_number;

-- name: settle_failed
-- What a reported (or reaped) failure means: below $1 consecutive failures, a retry after
-- $2 seconds doubled per earlier failure, never later than one period (a worker's own
-- next_run_at may put it later); at $1, the task is disabled and an improvement event says
-- so (published by the scheduler, posted by the notifier). Returns how many of each, and the
-- ids of the events written. An event's id is derived from the task and its run: decided
-- again after a rolled-back publish, it is the same event (consumers/improvement/announce.py).
WITH failed AS (
    SELECT id FROM optimization_queue
    WHERE status = 'failed' AND enabled
    FOR UPDATE SKIP LOCKED
), settled AS (
    UPDATE optimization_queue AS task
    SET status = CASE WHEN task.consecutive_failures >= $1 THEN 'failed' ELSE 'pending' END,
        enabled = task.consecutive_failures < $1,
        next_run_at = CASE WHEN task.consecutive_failures >= $1 THEN task.next_run_at
            ELSE greatest(task.next_run_at, COALESCE(task.last_failed_at, now()) + least(
                make_interval(secs => $2::float8 * 2 ^ least(task.consecutive_failures - 1, 30)),
                optimization_period(task.frequency))) END,
        updated_at = now()
    FROM failed
    WHERE task.id = failed.id
    RETURNING task.task_id, task.run_number, task.component_id, task.consecutive_failures,
              task.last_error, NOT task.enabled AS disabled
), announced AS (
    INSERT INTO improvement_events (
        event_id, event_type, component_type, component_id, old_value, new_value,
        trigger_reason, automated)
    SELECT md5(format('optimization_disabled:%s:%s', task_id, run_number))::uuid,
           'optimization_disabled', 'optimization_task', component_id,
           '{"enabled": true}'::jsonb,
           jsonb_build_object('enabled', false, 'task_id', task_id,
                              'consecutive_failures', consecutive_failures,
                              'last_error', left(last_error, 500)),
           left(format('%s consecutive failures', consecutive_failures), 100), true
    FROM settled
    WHERE disabled
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
SELECT (SELECT count(*) FROM settled WHERE NOT disabled) AS retried,
       (SELECT count(*) FROM settled WHERE disabled) AS disabled,
       ARRAY(SELECT event_id FROM announced) AS announced;

-- name: queue_depth
-- For the metrics: tasks by state, and how many are due now.
SELECT count(*) FILTER (WHERE enabled AND status = 'pending' AND next_run_at <= now()) AS due,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE NOT enabled) AS disabled
FROM optimization_queue;
