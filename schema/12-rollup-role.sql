-- 12: the rollup's own role, and nobody creates objects in `public` but its owner.
--   cie_rollup   whoever recomputes the rollups: `cie rollup` (the CronJob's own login) and
--                the validator when it also rolls up (CIE_VALIDATOR_ROLLUP_SECONDS; its login
--                is granted cie_ingest and cie_rollup). Writers only mark work (cie_ingest may
--                INSERT INTO rollup_pending); taking the marks and replacing figures is this
--                role's, and it writes no fact.

DO $$
BEGIN
    CREATE ROLE cie_rollup NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cie_rollup;
GRANT SELECT ON trade_outcomes, model_predictions, market_conditions, retention_rules,
    schema_migrations TO cie_rollup;
GRANT SELECT, INSERT, UPDATE, DELETE ON strategy_performance, model_performance TO cie_rollup;
GRANT SELECT, INSERT, DELETE ON rollup_pending TO cie_rollup;
GRANT SELECT, INSERT, UPDATE ON command_runs TO cie_rollup;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO cie_rollup;

-- PostgreSQL 15 already gives PUBLIC no CREATE on `public`; older servers and restored dumps
-- do. Said here so it holds wherever the schema lands (a no-op where it is already so).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
