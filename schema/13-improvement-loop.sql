-- 13: the improvement loop. The optimization scheduler (`cie schedule`,
-- consumers/improvement/scheduler.py) and the A/B evaluation (consumers/improvement/abtest.py).
-- A task of optimization_queue runs again and again: the scheduler claims it when due
-- (pending → running, run_number + 1) and publishes one message per run to
-- optimization-tasks; a worker reports back on improvement-events with the task id and run
-- number; the ingest consumer records the report (completed → pending at the next slot,
-- failed → failed), and the scheduler decides what a failure means (retry with backoff, or
-- disable). Additions to the seed.

ALTER TABLE optimization_queue
    -- Which run of the task a message or a report is about: the claim increments it, so a
    -- message published twice for one run carries the same (task_id, run_number), and a late
    -- report of an earlier run changes nothing.
    ADD COLUMN run_number INTEGER NOT NULL DEFAULT 0
        CONSTRAINT optimization_queue_run_number_not_negative CHECK (run_number >= 0),
    -- When the running run was claimed (or reported started): the reaper's clock.
    ADD COLUMN claimed_at TIMESTAMPTZ,
    -- When the last failure was reported: the retry's backoff counts from it.
    ADD COLUMN last_failed_at TIMESTAMPTZ;

-- The seed names no frequencies; these are the ones the scheduler can advance by. NOT VALID:
-- rows written before this migration are left as they are (the scheduler never claims a row
-- whose frequency it cannot advance: optimization_period is NULL for it).
ALTER TABLE optimization_queue ADD CONSTRAINT optimization_queue_frequency_known
    CHECK (frequency IN ('hourly', 'daily', 'weekly')) NOT VALID;

-- Hours, not days: a day is 24 hours whatever the session's time zone says about DST.
CREATE FUNCTION optimization_period(frequency TEXT) RETURNS INTERVAL
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE frequency
        WHEN 'hourly' THEN INTERVAL '1 hour'
        WHEN 'daily' THEN INTERVAL '24 hours'
        WHEN 'weekly' THEN INTERVAL '168 hours'
    END
$$;

-- The first slot of the task's grid (scheduled + k periods, k >= 1) after `done`: counted
-- from the scheduled time, so runs do not drift, and periods missed while a run was late or
-- the scheduler was down are skipped, not run one after another.
CREATE FUNCTION optimization_next_slot(scheduled TIMESTAMPTZ, period INTERVAL,
                                       done TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT scheduled + period * greatest(
        1, floor(extract(epoch FROM done - scheduled) / extract(epoch FROM period))::bigint + 1)
$$;

-- The claim's scan: due tasks in priority order.
CREATE INDEX optimization_queue_due ON optimization_queue (priority, next_run_at)
    WHERE enabled AND status = 'pending';

-- The scheduler's own role: it claims, reaps and settles tasks, evaluates and concludes A/B
-- tests from the trades, and writes the improvement events that say a task was disabled or a
-- test concluded. It writes no fact and no other table.
DO $$
BEGIN
    CREATE ROLE cie_scheduler NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cie_scheduler;
GRANT SELECT, UPDATE ON optimization_queue, ab_tests TO cie_scheduler;
GRANT SELECT ON trade_outcomes TO cie_scheduler;
GRANT INSERT ON improvement_events TO cie_scheduler;
GRANT SELECT ON schema_migrations, command_runs TO cie_scheduler;  -- start check, /metrics
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO cie_scheduler;
