-- 11: when each scheduled command last succeeded. `cie rollup` and `cie maintain` run once
-- and exit, so no scrape ever sees them: they record their success here, and every
-- long-running consumer exports it (cie_command_last_success_timestamp_seconds{command}) for
-- the freshness alerts in deploy/prometheus/alerts.yml. Addition to the seed.
CREATE TABLE command_runs (
    command TEXT PRIMARY KEY,
    last_success_at TIMESTAMPTZ NOT NULL,
    last_duration_seconds DOUBLE PRECISION NOT NULL
        CONSTRAINT command_runs_duration_not_negative CHECK (last_duration_seconds >= 0)
);

-- The commands run as the migration owner; the consumers only read.
GRANT SELECT ON command_runs TO cie_ingest, cie_analytics;

-- Every command checks at start that the schema is as new as its code (`cie consume` refuses
-- to run before the migrate Job of an upgrade has finished): it reads the ledger.
GRANT SELECT ON schema_migrations TO cie_ingest, cie_analytics;
