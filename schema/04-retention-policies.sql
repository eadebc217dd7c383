-- cie: requires timescaledb
-- 04: retention as TimescaleDB jobs, from the same retention_rules that `cie maintain` applies
-- on plain PostgreSQL (market_conditions 2 years, trade_outcomes and trade_fills 5 years,
-- model_predictions 3 years). Rules for tables that are not hypertables are set elsewhere.

SELECT add_retention_policy(format('%I', r.table_name)::regclass, drop_after => r.keep_for)
FROM retention_rules AS r
JOIN timescaledb_information.hypertables AS h
  ON h.hypertable_schema = current_schema() AND h.hypertable_name = r.table_name
ORDER BY r.table_name;
