-- 07: group roles for the runtime processes (NOLOGIN: a DBA grants them to login users).
--   the migration owner  the role that runs `cie migrate`; it owns every object (and runs
--                        `cie maintain`). It needs CREATE on the database, CREATEROLE once for
--                        this file, and superuser only for CREATE EXTENSION timescaledb.
--   cie_ingest           consumers and validator: read and write the tables they fill, never
--                        DROP, ALTER or TRUNCATE. DELETE only on trade_outcomes: an earlier fill
--                        arriving late moves a trade's entry_time, which is part of its key.
--   cie_analytics        dashboards, rollup readers and read replicas: SELECT only.
-- Roles are cluster-wide: creating one that another database's migration created first is fine.

DO $$
BEGIN
    CREATE ROLE cie_ingest NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE cie_analytics NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cie_ingest, cie_analytics;

GRANT SELECT, INSERT, UPDATE ON
    trade_outcomes, trade_fills, model_predictions, market_conditions,
    strategy_performance, model_performance, improvement_events, ab_tests, optimization_queue
TO cie_ingest;
GRANT DELETE ON trade_outcomes TO cie_ingest;
GRANT SELECT ON retention_rules, market_daily_summary TO cie_ingest;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO cie_ingest;

-- On plain PostgreSQL, bar writes mark summary days through a trigger run as the writer.
DO $$
BEGIN
    IF to_regclass('market_daily_summary_pending') IS NOT NULL THEN
        GRANT SELECT, INSERT ON market_daily_summary_pending TO cie_ingest;
    END IF;
END
$$;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO cie_analytics;
