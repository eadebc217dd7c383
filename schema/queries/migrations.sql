-- Named queries of `cie migrate` (consumers/platform/migrations.py): the ledger of applied
-- files and the choice between the TimescaleDB and plain-PostgreSQL paths.

-- name: lock
-- $1: the project's advisory lock key: replicas that start together migrate one at a time.
SELECT pg_advisory_lock($1);

-- name: unlock
SELECT pg_advisory_unlock($1);

-- name: ledger_create
CREATE TABLE IF NOT EXISTS schema_migrations (
    filename TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('applied', 'skipped')),
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: ledger_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: ledger_read
SELECT filename, checksum, outcome FROM schema_migrations;

-- name: ledger_record
INSERT INTO schema_migrations (filename, checksum, outcome) VALUES ($1, $2, $3);

-- name: timescaledb_usable
-- Installed in this database, or installable here (available and preloaded). Only a superuser
-- or a member of pg_read_all_settings may read shared_preload_libraries: for any other role,
-- preloaded is NULL, unknown (CASE is lazy: the setting is read only when allowed and needed).
SELECT installed, available,
    CASE WHEN installed OR NOT available THEN false
         WHEN NOT pg_has_role('pg_read_all_settings', 'USAGE') THEN NULL
         ELSE 'timescaledb' = ANY (string_to_array(
             replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
    END AS preloaded
FROM (SELECT
    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS installed,
    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available
) AS extension;
