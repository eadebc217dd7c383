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

-- name: oldest_trade
-- The oldest trade still in the table and its retention: a trade older than that has not been
-- archived yet (retention removes only what `cie archive` verified in S3). Indexed: cheap.
SELECT extract(epoch FROM (SELECT min(entry_time) FROM trade_outcomes))::float8 AS oldest,
       extract(epoch FROM keep_for)::float8 AS keep_for
FROM retention_rules WHERE table_name = 'trade_outcomes';

-- name: archived
-- What cold storage holds, per table (a small table: one row per Parquet object): the parts
-- a reader reads, not those a later part replaced.
SELECT table_name, sum(row_count)::float8 AS rows, sum(bytes)::float8 AS bytes
FROM archive_parts_current GROUP BY table_name;

-- name: archive_buckets
-- Whether each archive bucket keeps old versions, as `cie archive` last found it.
SELECT location, (versioning = 'Enabled') AS versioned FROM archive_buckets
WHERE versioning <> 'Unknown';

-- name: maintenance_job_runs
-- TimescaleDB: the jobs `cie maintain` ran in the foreground, and whether the last run failed.
SELECT proc_name AS job, relation, NOT succeeded AS failed FROM maintenance_job_runs;

-- name: timescaledb_jobs_visible
-- TimescaleDB is installed in this database (its job views exist).
SELECT to_regclass('timescaledb_information.job_stats') IS NOT NULL;

-- name: timescaledb_jobs
-- The policies' jobs, by procedure and relation, and whether the last run of one failed (a job
-- not run yet has not). Jobs below 1000 are TimescaleDB's own (telemetry, its job history's
-- retention), not the schema's.
SELECT j.proc_name::text AS job, coalesce(j.hypertable_name::text, '') AS relation,
       bool_or(coalesce(s.last_run_status = 'Failed', false)) AS last_run_failed
FROM timescaledb_information.jobs AS j
JOIN timescaledb_information.job_stats AS s USING (job_id)
WHERE j.job_id >= 1000
GROUP BY 1, 2;
