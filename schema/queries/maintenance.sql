-- Named queries for `cie maintain` on plain PostgreSQL (consumers/platform/maintenance.py).
-- On TimescaleDB the same work is done by its jobs (04, 05, 06 migrations).

-- name: retention_rules
-- Identifiers come quoted from the catalog's own quote_ident, never from message content.
SELECT r.table_name, quote_ident(r.table_name) AS table_ident,
       quote_ident(r.time_column) AS column_ident, r.keep_for
FROM retention_rules AS r
JOIN pg_class AS c ON c.relname = r.table_name AND c.relkind IN ('r', 'p')
JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = current_schema()
ORDER BY r.table_name;

-- name: plain_path
-- The summary table's queue exists only on the plain-PostgreSQL path.
SELECT to_regclass('market_daily_summary_pending') IS NOT NULL;

-- name: expire_rows
-- A template: {table} and {column} are identifiers quote_ident made from retention_rules (a
-- table only migrations write), never message content. $1: keep for, $2: rows per batch.
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE {column} < now() - $1::interval LIMIT $2));

-- name: raw_bars_keep_for
SELECT keep_for FROM retention_rules WHERE table_name = 'market_conditions';

-- name: refresh_summary_days
-- Claims up to $1 pending (symbol, day) pairs and recomputes those days from the raw bars.
-- A day before the one holding the raw bars' retention horizon ($2) may have lost its raw
-- rows already (retention deletes whole days, expire_market_conditions): there a stored
-- summary of more bars than are left is the record (a late bar for a deleted day), while a
-- day with no summary, or one of no more bars (a history load, a new symbol universe), is
-- computed. The same rule as cie_summarise_expiring_bars on TimescaleDB (migration 21).
-- Days are UTC days; "+ 24 hours" because "+ 1 day" follows the session's DST rules.
WITH claimed AS (
    DELETE FROM market_daily_summary_pending AS p
    USING (
        SELECT symbol, day FROM market_daily_summary_pending
        ORDER BY symbol, day
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE p.symbol = c.symbol AND p.day = c.day
    RETURNING p.symbol, p.day
),
computed AS (
    SELECT
        m.symbol,
        c.day,
        (array_agg(m.open ORDER BY m.timestamp))[1] AS open,
        max(m.high) AS high,
        min(m.low) AS low,
        (array_agg(m.close ORDER BY m.timestamp DESC))[1] AS close,
        sum(m.volume) AS volume,
        count(*) AS bar_count,
        avg(m.atr_14) AS avg_atr_14,
        avg(m.rsi_14) AS avg_rsi_14,
        avg(m.volatility_20d) AS avg_volatility_20d,
        avg(m.vix) AS avg_vix,
        avg(m.regime_confidence) AS avg_regime_confidence,
        mode() WITHIN GROUP (ORDER BY m.detected_regime) AS dominant_regime
    FROM claimed AS c
    JOIN market_conditions AS m
      ON m.symbol = c.symbol
     AND m.timestamp >= c.day
     AND m.timestamp < c.day + INTERVAL '24 hours'
    GROUP BY m.symbol, c.day
    HAVING c.day >= date_trunc('day', now() - $2::interval, 'UTC')
        OR NOT EXISTS (SELECT 1 FROM market_daily_summary AS s
                       WHERE s.symbol = m.symbol AND s.day = c.day
                         AND s.bar_count > count(m.timestamp))
),
upserted AS (
    INSERT INTO market_daily_summary AS s
    SELECT * FROM computed
    ON CONFLICT (symbol, day) DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
        close = EXCLUDED.close, volume = EXCLUDED.volume, bar_count = EXCLUDED.bar_count,
        avg_atr_14 = EXCLUDED.avg_atr_14, avg_rsi_14 = EXCLUDED.avg_rsi_14,
        avg_volatility_20d = EXCLUDED.avg_volatility_20d, avg_vix = EXCLUDED.avg_vix,
        avg_regime_confidence = EXCLUDED.avg_regime_confidence,
        dominant_regime = EXCLUDED.dominant_regime
    RETURNING 1
)
SELECT (SELECT count(*) FROM claimed) AS claimed, (SELECT count(*) FROM upserted) AS refreshed;

-- name: expire_market_conditions
-- Raw bars past retention ($1), up to $2 rows: whole UTC days only, and never a day whose
-- summary is still pending (a late bar not yet summarised): every raw day is summarised
-- before it is deleted. refresh_summary_days runs first in each `cie maintain`.
DELETE FROM market_conditions
WHERE ctid = ANY(ARRAY(
    SELECT m.ctid FROM market_conditions AS m
    WHERE m.timestamp < date_trunc('day', now() - $1::interval, 'UTC')
      AND NOT EXISTS (
          SELECT 1 FROM market_daily_summary_pending AS p
          WHERE p.symbol = m.symbol AND p.day = date_trunc('day', m.timestamp, 'UTC'))
    LIMIT $2));

-- name: archived_slices_due
-- Plain PostgreSQL, trade_outcomes and trade_fills: months past retention ($2) of table $1
-- that still hold rows (consumers/archive/, migration 15); whether S3 holds exactly those
-- rows is cie_remove_archived_slice's to check, as it removes them.
SELECT slice_start, slice_end
FROM archive_slices
WHERE table_name = $1 AND slice_end <= now() - $2::interval AND live_rows > 0
ORDER BY slice_start;

-- name: remove_archived_slice
-- Removes the slice when its rows are exactly what S3 holds: the rows removed, or NULL.
SELECT cie_remove_archived_slice($1, $2, $3);

-- name: due_jobs
-- TimescaleDB: the project's jobs (its hypertables' and continuous aggregate's policies, and
-- its own cie_* procedures) whose last run failed, or that are ten minutes overdue (a working
-- scheduler starts a job within seconds of its time: maintain does not race it). Refreshes
-- first, so a day is summarised before a drop in the same run; then compression, the rest.
SELECT j.job_id, j.proc_name::text AS proc_name,
       coalesce(j.hypertable_name::text, '') AS relation
FROM timescaledb_information.jobs AS j
LEFT JOIN timescaledb_information.job_stats AS s USING (job_id)
WHERE j.scheduled
  AND (j.proc_name::text LIKE 'cie\_%' OR j.hypertable_schema = current_schema())
  AND (coalesce(s.last_run_status = 'Failed', false)
       OR coalesce(s.next_start, j.next_start, '-infinity') <= now() - INTERVAL '10 minutes')
ORDER BY CASE j.proc_name WHEN 'policy_refresh_continuous_aggregate' THEN 0
                          WHEN 'policy_compression' THEN 1 ELSE 2 END, j.job_id;

-- name: record_job_run
INSERT INTO maintenance_job_runs (job_id, proc_name, relation, ran_at, succeeded, error)
VALUES ($1, $2, $3, now(), $4, $5)
ON CONFLICT (job_id) DO UPDATE SET
    proc_name = EXCLUDED.proc_name, relation = EXCLUDED.relation, ran_at = EXCLUDED.ran_at,
    succeeded = EXCLUDED.succeeded, error = EXCLUDED.error;

-- name: forget_old_rejections
-- ingest_rejections are needed until the Kafka transaction that sends their dead letters
-- (seconds); a week covers any outage of the broker.
WITH gone AS (
    DELETE FROM ingest_rejections WHERE rejected_at < now() - interval '7 days' RETURNING 1
)
SELECT count(*) FROM gone;
