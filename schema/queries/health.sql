-- Named queries of the health endpoints (consumers/platform/health.py).

-- name: ping
-- /readyz: the database answers.
SELECT 1;

-- name: command_successes
-- The scheduled commands' last successes, exported by every long-running consumer.
SELECT command, extract(epoch FROM last_success_at)::float8 AS at FROM command_runs;

-- name: record_command_success
-- A scheduled command (rollup, maintain) finished: $1 command, $2 seconds it took.
INSERT INTO command_runs (command, last_success_at, last_duration_seconds)
VALUES ($1, now(), $2)
ON CONFLICT (command) DO UPDATE
SET last_success_at = EXCLUDED.last_success_at,
    last_duration_seconds = EXCLUDED.last_duration_seconds;
