-- Named queries of `cie rollup` (consumers/analytics/rollup.py). Definitions are in docs/analytics.md.
-- Days are local days in the rollup's time zone ($tz parameters); a day [d, e) is the
-- instants from local midnight of d to local midnight of e.

-- name: consume_pending
-- What changed since the last run, as the rollup's snapshot sees it, deleted as it is read
-- (one pass over the marks; a failed run rolls the delete back). A mark committed after the
-- snapshot is neither read nor deleted: it stays for the next run. A prediction mark's
-- quarter hour is read only from $2 on (the days whose tallies are kept, schema/29): older
-- days are recounted whole, and a year's marks are then 15,000 rows instead of 85,000.
WITH consumed AS (
    DELETE FROM rollup_pending WHERE id <= $1
    RETURNING kind, strategy_id, model_version, day, quarter
)
SELECT DISTINCT kind, strategy_id, model_version, day,
       CASE WHEN quarter >= $2::timestamptz THEN quarter END AS quarter
FROM consumed;

-- name: last_pending_id
SELECT max(id) FROM rollup_pending;

-- name: mark_every_trade
-- `cie rollup --full`: treat every closed trade as changed.
INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
SELECT DISTINCT 'trade', strategy_id, model_version, (exit_time AT TIME ZONE 'UTC')::date
FROM trade_outcomes WHERE exit_time IS NOT NULL;

-- name: mark_every_prediction
-- `cie rollup --full`, or the kept tallies started over: every validated prediction's UTC
-- day as changed, whole.
INSERT INTO rollup_pending (kind, model_version, day)
SELECT DISTINCT 'prediction', model_version, (predicted_at AT TIME ZONE 'UTC')::date
FROM model_predictions WHERE validated_at IS NOT NULL;

-- name: plan_settings
-- For the rest of the rollup's transaction ($1 true; false: the session of a replica reader):
-- - at least 64 MB per sort or hash: a year of strategy days is grouped in about 35 MB, and
--   spilling to disk cost a fifth of the time;
-- - plans made for each execution's parameters (never a generic plan), so that trade_days
--   scans a few days by index and a year sequentially;
-- - no JIT compilation: on TimescaleDB a year's trade_days is a plan per chunk, and compiling
--   them made a query that runs in about 1 s take 20-25 s;
-- - on TimescaleDB (2.12 on), no chunk-wise aggregation: trade_days aggregated a year chunk
--   by chunk in one process (1.3 s), where PostgreSQL's own plan has parallel workers (0.78 s).
SELECT set_config('work_mem', CASE
           WHEN pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('64MB') THEN '64MB'
           ELSE current_setting('work_mem') END, $1),
       set_config('plan_cache_mode', 'force_custom_plan', $1),
       set_config('jit', 'off', $1),
       CASE WHEN current_setting('timescaledb.enable_chunkwise_aggregation', true) IS NOT NULL
            THEN set_config('timescaledb.enable_chunkwise_aggregation', 'off', $1) END;

-- name: horizons
-- Per fact table, the first local day ($1 time zone) whose facts are all still retained: a
-- period that starts earlier is not recomputed (its stored figures are the record).
SELECT table_name, ((now() - keep_for) AT TIME ZONE $1::text)::date + 1 AS first_day
FROM retention_rules
WHERE table_name IN ('trade_outcomes', 'model_predictions');

-- name: trade_days_table
-- The run's trade days (trade_days' rows), kept on the primary for strategy_periods and
-- model_day_pnl, when a replica groups them (else trade_days creates it: CREATE TABLE AS);
-- dropped at the end of the run's transaction.
CREATE TEMP TABLE rollup_trade_days (
    strategy_id TEXT, model_version TEXT, day DATE, trades BIGINT, wins BIGINT, losses BIGINT,
    breakevens BIGINT, gross_profit NUMERIC, gross_loss NUMERIC, net_pnl NUMERIC,
    commission NUMERIC, largest_win NUMERIC, largest_loss NUMERIC, slippage_sum NUMERIC,
    slippage_count BIGINT, fill_latency_us_sum NUMERIC, fill_latency_count BIGINT
) ON COMMIT DROP;

-- name: model_day_pnl
-- The kept trade days' net P&L per model version and local day (live_pnl_contribution).
SELECT model_version, day, sum(net_pnl) AS net_pnl FROM rollup_trade_days GROUP BY 1, 2;

-- name: trade_days
-- (Grouped into rollup_trade_days by the primary, or read from a replica and copied there.)
-- Closed trades per (strategy, model version, local exit day) of the given model versions in
-- the given day ranges ($1 model version, $2 first day, $3 day after the last; $4 time zone),
-- for both the strategy periods and the model days' P&L. The ranges must not overlap and
-- must lie within one span of days ($5 first, $6 day after the last).
-- The span is the only time condition on the table: as a constant it lets the planner choose
-- an index scan for a few days and a sequential scan for a year. Joined to the ranges, each
-- range was one index scan, however wide (the planner cannot see its width): 2x slower for
-- a year. Days of the span outside every range are grouped, then dropped.
SELECT g.* FROM (
SELECT t.strategy_id, t.model_version, (t.exit_time AT TIME ZONE $4::text)::date AS day,
       count(*) AS trades,
       count(*) FILTER (WHERE t.outcome_type = 'WIN') AS wins,
       count(*) FILTER (WHERE t.outcome_type = 'LOSS') AS losses,
       count(*) FILTER (WHERE t.outcome_type = 'BREAKEVEN') AS breakevens,
       coalesce(sum(t.net_pnl) FILTER (WHERE t.outcome_type = 'WIN'), 0) AS gross_profit,
       coalesce(sum(t.net_pnl) FILTER (WHERE t.outcome_type = 'LOSS'), 0) AS gross_loss,
       coalesce(sum(t.net_pnl), 0) AS net_pnl,
       coalesce(sum(t.commission), 0) AS commission,
       max(t.net_pnl) FILTER (WHERE t.outcome_type = 'WIN') AS largest_win,
       min(t.net_pnl) FILTER (WHERE t.outcome_type = 'LOSS') AS largest_loss,
       coalesce(sum(t.slippage), 0) AS slippage_sum,
       count(t.slippage) AS slippage_count,
       coalesce(sum(t.fill_latency_us_sum), 0) AS fill_latency_us_sum,
       coalesce(sum(t.fill_latency_count), 0)::bigint AS fill_latency_count
FROM trade_outcomes AS t
WHERE t.model_version = ANY($1::text[])
  AND t.exit_time >= ($5::date::timestamp AT TIME ZONE $4::text)
  AND t.exit_time < ($6::date::timestamp AT TIME ZONE $4::text)
  AND t.outcome_type IN ('WIN', 'LOSS', 'BREAKEVEN')
GROUP BY 1, 2, 3) AS g
WHERE EXISTS (SELECT FROM unnest($1::text[], $2::date[], $3::date[])
                              AS r(model_version, first_day, end_day)
              WHERE r.model_version = g.model_version
                AND g.day >= r.first_day AND g.day < r.end_day);

-- name: strategy_periods
-- strategy_performance of the wanted periods ($1 strategy, $2 model version, $3 period type,
-- $4 period start) from their days in rollup_trade_days, set-based: every figure as
-- performance.strategy_figures defines it ($5 capital base, $6 periods a year, $7 the daily
-- risk-free rate as the float Python divides), fitted to its column (schema/28). A wanted
-- period without a trade day is deleted. Rows are rewritten only when a figure changed, so a
-- re-run leaves updated_at alone. Returns ('recomputed' | 'deleted', NULL, NULL, n) and, per
-- figure left NULL, ('undefined', column, reason, n), which the rollup logs.
-- Floats as Python has them: a day's return is the exact quotient rounded to a float, and a
-- float becomes a column's value through its shortest text (Python's repr). Sums of floats
-- run in PostgreSQL's order where Python's math.fsum is exact, and the growth behind Calmar is
-- exp(sum(ln)) where Python multiplies: they differ in the last bits, far below the columns'
-- 4 decimals (tests/integration/test_rollup_reference.py compares every figure with Python's).
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[])
        AS w(strategy_id, model_version, period_type, period_start)
),
day_periods AS MATERIALIZED (  -- each trade day in its week and month (as a scan of its
    -- own: joined to the wanted periods with the VALUES inside, the planner paired every day
    -- with every period of its strategy and filtered 6 million pairs for a year)
    SELECT p.period_type, p.period_start, d.*
    FROM rollup_trade_days AS d
    CROSS JOIN LATERAL (VALUES ('WEEK', date_trunc('week', d.day::timestamp)::date),
                               ('MONTH', date_trunc('month', d.day::timestamp)::date))
        AS p(period_type, period_start)
),
equity AS (  -- end-of-day equity from the capital base, and its running peak before the day
    SELECT *, $5::numeric + cum AS equity_after, $5::numeric + cum - net_pnl AS equity_before,
           greatest($5::numeric, $5::numeric + max(cum) OVER before) AS peak_before
    FROM (SELECT d.*, sum(d.net_pnl) OVER upto AS cum
          FROM day_periods AS d
          JOIN wanted AS w USING (strategy_id, model_version, period_type, period_start)
          WINDOW upto AS (PARTITION BY strategy_id, model_version, period_type, period_start
                          ORDER BY day ROWS UNBOUNDED PRECEDING)) AS c
    WINDOW before AS (PARTITION BY strategy_id, model_version, period_type, period_start
                      ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    UNION ALL  -- a wanted DAY period holds one trade day, with no peak before it but the base
    -- (the same values the windows give, without their sorts: 14,600 of a year's 17,200
    -- periods, whose per-period sorts below cost a third of the statement)
    SELECT 'DAY', d.day, d.*, d.net_pnl, $5::numeric + d.net_pnl,
           $5::numeric + d.net_pnl - d.net_pnl, $5::numeric
    FROM rollup_trade_days AS d
    JOIN wanted AS w ON (w.strategy_id, w.model_version, w.period_type, w.period_start)
                      = (d.strategy_id, d.model_version, 'DAY', d.day)
),
stepped AS (  -- each day's return, and its fall from the peak: performance.max_drawdown's
    -- walk, where a day at or above the peak is the new peak
    SELECT *, CASE WHEN equity_before > 0
                   THEN (round(net_pnl, 30) / equity_before)::float8 END AS daily_return,
           equity_after >= peak_before AS at_peak,
           CASE WHEN equity_after < peak_before
                THEN round(peak_before - equity_after, 30) / peak_before ELSE 0 END AS fall
    FROM equity
),
walked AS (  -- the weeks' and months' walks. Episode n runs from the n-th day at the peak
    -- (0: from the period's first day, at the capital base) to the next one.
    SELECT *, count(*) FILTER (WHERE at_peak) OVER upto AS episode,
           daily_return - $7::float8 AS excess,
           avg(daily_return - $7::float8) OVER whole AS mean_excess
    FROM stepped
    WHERE period_type <> 'DAY'
    WINDOW upto AS (PARTITION BY strategy_id, model_version, period_type, period_start
                    ORDER BY day ROWS UNBOUNDED PRECEDING),
           whole AS (PARTITION BY strategy_id, model_version, period_type, period_start)
),
periods AS (
    SELECT strategy_id, model_version, period_type, period_start,
           sum(trades)::integer AS total_trades, sum(wins)::integer AS winning_trades,
           sum(losses)::integer AS losing_trades, sum(breakevens)::integer AS breakeven_trades,
           sum(gross_profit) AS gross_profit, sum(gross_loss) AS gross_loss,
           sum(net_pnl) AS net_pnl, sum(commission) AS commission,
           max(largest_win) AS largest_win, min(largest_loss) AS largest_loss,
           sum(slippage_sum) AS slippage_sum, sum(slippage_count) AS slippage_count,
           sum(fill_latency_us_sum) AS latency_us, sum(fill_latency_count) AS latency_count,
           count(*) AS days, min(day) AS first_day, max(day) AS last_day,
           bool_or(equity_before <= 0) AS exhausted,  -- the capital base ran out
           max(fall) AS worst_fall,
           -- the first day of the largest fall is in this episode; the next one's first day
           -- is the recovery (else the period's last day)
           (array_agg(episode ORDER BY fall DESC, day))[1] AS worst_episode,
           array_agg(day ORDER BY day) FILTER (WHERE at_peak) AS peak_days,
           sum(excess) AS excess_sum,
           sum((excess - mean_excess) ^ 2) AS squared_deviations,
           sum(least(excess, 0) ^ 2) AS squared_downside,
           bool_or(daily_return <= -1) AS ruined,  -- growth 0 or below
           sum(ln(1 + daily_return)) FILTER (WHERE daily_return > -1) AS log_growth
    FROM walked
    GROUP BY strategy_id, model_version, period_type, period_start
    UNION ALL  -- the days' periods: the same figures of their one step
    SELECT strategy_id, model_version, period_type, period_start,
           trades::integer, wins::integer, losses::integer, breakevens::integer,
           gross_profit, gross_loss, net_pnl, commission, largest_win, largest_loss,
           slippage_sum, slippage_count, fill_latency_us_sum, fill_latency_count,
           1, day, day, equity_before <= 0, fall, CASE WHEN at_peak THEN 1 ELSE 0 END,
           CASE WHEN at_peak THEN ARRAY[day] END,
           excess, (excess - excess) ^ 2, least(excess, 0) ^ 2, daily_return <= -1,
           CASE WHEN daily_return > -1 THEN ln(1 + daily_return) END
    FROM (SELECT *, daily_return - $7::float8 AS excess FROM stepped WHERE period_type = 'DAY')
        AS s
),
raw AS MATERIALIZED (  -- each figure before it is fitted to its column; NULL: undefined
    SELECT *,
           round(winning_trades::numeric, 40) / total_trades AS raw_win_rate,
           CASE WHEN gross_loss <> 0 THEN round(gross_profit, 40) / -gross_loss END
               AS raw_profit_factor,
           CASE WHEN winning_trades > 0 THEN round(gross_profit, 40) / winning_trades END
               AS raw_avg_win,
           CASE WHEN losing_trades > 0 THEN round(gross_loss, 40) / losing_trades END
               AS raw_avg_loss,
           round(net_pnl, 40) / total_trades AS raw_avg_trade,
           CASE WHEN $5::numeric > 0 THEN worst_fall::float8 END AS raw_max_drawdown,
           CASE WHEN $5::numeric > 0 AND worst_fall > 0
                THEN coalesce(peak_days[worst_episode + 1], last_day)
                     - CASE WHEN worst_episode = 0 THEN first_day ELSE peak_days[worst_episode] END
                WHEN $5::numeric > 0 THEN 0 END AS max_drawdown_duration_days,
           CASE WHEN slippage_count > 0 THEN round(slippage_sum, 40) / slippage_count END
               AS raw_avg_slippage,
           CASE WHEN latency_count > 0
                THEN round_half_even(round(latency_us::numeric, 40) / (latency_count * 1000), 0)
                END AS raw_avg_fill_time_ms,
           CASE WHEN NOT exhausted AND days > 1 AND squared_deviations > 0
                THEN (excess_sum / days) / sqrt(squared_deviations / (days - 1))
                     * sqrt($6::float8) END AS raw_sharpe_ratio,
           CASE WHEN NOT exhausted AND days > 1 AND squared_downside > 0
                THEN (excess_sum / days * $6)
                     / (sqrt(squared_downside / days) * sqrt($6::float8)) END
               AS raw_sortino_ratio,
           CASE WHEN annual IS NULL THEN NULL
                WHEN annual = 0 THEN annual
                WHEN ln(abs(annual)) - ln(worst_fall::float8) < 709.782712893384
                THEN annual / worst_fall::float8 END  -- else too big for a float: Python's inf
               AS raw_calmar_ratio
    FROM periods
    CROSS JOIN LATERAL (  -- the compound annual growth rate, for Calmar
        SELECT CASE WHEN NOT exhausted AND NOT ruined AND worst_fall > 0
                         AND log_growth * $6 / days < 709.782712893384  -- ln of the largest float
                    THEN CASE WHEN log_growth * $6 / days < -745.1332191019412  -- 0 as a float
                              THEN 0 ELSE exp(log_growth * $6 / days) END - 1
               END AS annual) AS g
),
figures AS (
    SELECT *,
           fitted(gross_profit, 18, 4) AS fit_gross_profit,
           fitted(gross_loss, 18, 4) AS fit_gross_loss,
           fitted(net_pnl, 18, 4) AS fit_net_pnl,
           fitted(commission, 18, 4) AS fit_commission,
           fitted(raw_win_rate, 5, 4) AS win_rate,
           fitted(raw_profit_factor, 8, 4) AS profit_factor,
           fitted(raw_avg_win, 18, 4) AS avg_win,
           fitted(raw_avg_loss, 18, 4) AS avg_loss,
           fitted(raw_avg_trade, 18, 4) AS avg_trade,
           fitted(largest_win, 18, 4) AS fit_largest_win,
           fitted(largest_loss, 18, 4) AS fit_largest_loss,
           fitted(raw_max_drawdown::text::numeric, 8, 4) AS max_drawdown,
           fitted(raw_sharpe_ratio::text::numeric, 8, 4) AS sharpe_ratio,
           fitted(raw_sortino_ratio::text::numeric, 8, 4) AS sortino_ratio,
           fitted(raw_calmar_ratio::text::numeric, 8, 4) AS calmar_ratio,
           fitted(raw_avg_slippage, 18, 8) AS avg_slippage,
           CASE WHEN abs(raw_avg_fill_time_ms) <= 2147483647
                THEN raw_avg_fill_time_ms::integer END AS avg_fill_time_ms
    FROM raw
),
notes AS (  -- why figures are NULL, as performance.Undefined notes it: (column, reason, periods)
    -- Counted in one pass, then unpivoted: a (column, reason) row per period and figure,
    -- grouped, took 0.16 s of a year's statement instead of 0.01 (EXPLAIN ANALYZE).
    SELECT n.* FROM (
        SELECT count(*) FILTER (WHERE exhausted) AS exhausted,
               count(*) FILTER (WHERE fit_gross_profit IS NULL) AS gross_profit,
               count(*) FILTER (WHERE fit_gross_loss IS NULL) AS gross_loss,
               count(*) FILTER (WHERE fit_net_pnl IS NULL) AS net_pnl,
               count(*) FILTER (WHERE fit_commission IS NULL) AS commission,
               count(*) FILTER (WHERE win_rate IS NULL) AS win_rate,
               count(*) FILTER (WHERE raw_profit_factor IS NULL) AS no_profit_factor,
               count(*) FILTER (WHERE raw_profit_factor IS NOT NULL AND profit_factor IS NULL)
                   AS profit_factor,
               count(*) FILTER (WHERE raw_avg_win IS NULL) AS no_avg_win,
               count(*) FILTER (WHERE raw_avg_win IS NOT NULL AND avg_win IS NULL) AS avg_win,
               count(*) FILTER (WHERE raw_avg_loss IS NULL) AS no_avg_loss,
               count(*) FILTER (WHERE raw_avg_loss IS NOT NULL AND avg_loss IS NULL)
                   AS avg_loss,
               count(*) FILTER (WHERE avg_trade IS NULL) AS avg_trade,
               count(*) FILTER (WHERE largest_win IS NULL) AS no_largest_win,
               count(*) FILTER (WHERE largest_win IS NOT NULL AND fit_largest_win IS NULL)
                   AS largest_win,
               count(*) FILTER (WHERE largest_loss IS NULL) AS no_largest_loss,
               count(*) FILTER (WHERE largest_loss IS NOT NULL AND fit_largest_loss IS NULL)
                   AS largest_loss,
               count(*) FILTER (WHERE raw_max_drawdown IS NULL) AS no_max_drawdown,
               count(*) FILTER (WHERE raw_max_drawdown IS NOT NULL AND max_drawdown IS NULL)
                   AS max_drawdown,
               count(*) FILTER (WHERE raw_sharpe_ratio IS NULL) AS no_sharpe_ratio,
               count(*) FILTER (WHERE raw_sharpe_ratio IS NOT NULL AND sharpe_ratio IS NULL)
                   AS sharpe_ratio,
               count(*) FILTER (WHERE raw_sortino_ratio IS NULL) AS no_sortino_ratio,
               count(*) FILTER (WHERE raw_sortino_ratio IS NOT NULL AND sortino_ratio IS NULL)
                   AS sortino_ratio,
               count(*) FILTER (WHERE raw_calmar_ratio IS NULL) AS no_calmar_ratio,
               count(*) FILTER (WHERE raw_calmar_ratio IS NOT NULL AND calmar_ratio IS NULL)
                   AS calmar_ratio,
               count(*) FILTER (WHERE raw_avg_slippage IS NOT NULL AND avg_slippage IS NULL)
                   AS avg_slippage,
               count(*) FILTER (WHERE raw_avg_fill_time_ms IS NOT NULL
                                  AND avg_fill_time_ms IS NULL) AS avg_fill_time_ms
        FROM figures) AS c
    CROSS JOIN LATERAL (VALUES
        ('sharpe_ratio, sortino_ratio, calmar_ratio', 'capital base exhausted', c.exhausted),
        ('gross_profit', 'beyond DECIMAL(18, 4)', c.gross_profit),
        ('gross_loss', 'beyond DECIMAL(18, 4)', c.gross_loss),
        ('net_pnl', 'beyond DECIMAL(18, 4)', c.net_pnl),
        ('total_commission', 'beyond DECIMAL(18, 4)', c.commission),
        ('win_rate', 'beyond DECIMAL(5, 4)', c.win_rate),
        ('profit_factor', 'no losing trade', c.no_profit_factor),
        ('profit_factor', 'beyond DECIMAL(8, 4)', c.profit_factor),
        ('avg_win', 'no winning trade', c.no_avg_win),
        ('avg_win', 'beyond DECIMAL(18, 4)', c.avg_win),
        ('avg_loss', 'no losing trade', c.no_avg_loss),
        ('avg_loss', 'beyond DECIMAL(18, 4)', c.avg_loss),
        ('avg_trade', 'beyond DECIMAL(18, 4)', c.avg_trade),
        ('largest_win', 'no winning trade', c.no_largest_win),
        ('largest_win', 'beyond DECIMAL(18, 4)', c.largest_win),
        ('largest_loss', 'no losing trade', c.no_largest_loss),
        ('largest_loss', 'beyond DECIMAL(18, 4)', c.largest_loss),
        ('max_drawdown', 'no data', c.no_max_drawdown),
        ('max_drawdown', 'beyond DECIMAL(8, 4)', c.max_drawdown),
        ('sharpe_ratio', 'fewer than two daily returns or no variance', c.no_sharpe_ratio),
        ('sharpe_ratio', 'beyond DECIMAL(8, 4)', c.sharpe_ratio),
        ('sortino_ratio', 'fewer than two daily returns or no downside', c.no_sortino_ratio),
        ('sortino_ratio', 'beyond DECIMAL(8, 4)', c.sortino_ratio),
        ('calmar_ratio', 'no drawdown', c.no_calmar_ratio),
        ('calmar_ratio', 'beyond DECIMAL(8, 4)', c.calmar_ratio),
        ('avg_slippage', 'beyond DECIMAL(18, 8)', c.avg_slippage),
        ('avg_fill_time_ms', 'beyond INTEGER', c.avg_fill_time_ms)
    ) AS n(column_name, reason, periods)
    WHERE n.periods > 0
),
upserted AS (
    INSERT INTO strategy_performance AS s (
        strategy_id, model_version, period_type, period_start,
        total_trades, winning_trades, losing_trades, breakeven_trades,
        gross_profit, gross_loss, net_pnl, total_commission,
        win_rate, profit_factor, avg_win, avg_loss, avg_trade, largest_win, largest_loss,
        max_drawdown, max_drawdown_duration_days, sharpe_ratio, sortino_ratio, calmar_ratio,
        avg_slippage, avg_fill_time_ms
    )
    SELECT strategy_id, model_version, period_type, period_start,
           total_trades, winning_trades, losing_trades, breakeven_trades,
           fit_gross_profit, fit_gross_loss, fit_net_pnl, fit_commission,
           win_rate, profit_factor, avg_win, avg_loss, avg_trade, fit_largest_win,
           fit_largest_loss, max_drawdown, max_drawdown_duration_days, sharpe_ratio,
           sortino_ratio, calmar_ratio, avg_slippage, avg_fill_time_ms
    FROM figures
    ON CONFLICT (strategy_id, model_version, period_type, period_start) DO UPDATE SET
        total_trades = EXCLUDED.total_trades, winning_trades = EXCLUDED.winning_trades,
        losing_trades = EXCLUDED.losing_trades, breakeven_trades = EXCLUDED.breakeven_trades,
        gross_profit = EXCLUDED.gross_profit, gross_loss = EXCLUDED.gross_loss,
        net_pnl = EXCLUDED.net_pnl, total_commission = EXCLUDED.total_commission,
        win_rate = EXCLUDED.win_rate, profit_factor = EXCLUDED.profit_factor,
        avg_win = EXCLUDED.avg_win, avg_loss = EXCLUDED.avg_loss,
        avg_trade = EXCLUDED.avg_trade, largest_win = EXCLUDED.largest_win,
        largest_loss = EXCLUDED.largest_loss, max_drawdown = EXCLUDED.max_drawdown,
        max_drawdown_duration_days = EXCLUDED.max_drawdown_duration_days,
        sharpe_ratio = EXCLUDED.sharpe_ratio, sortino_ratio = EXCLUDED.sortino_ratio,
        calmar_ratio = EXCLUDED.calmar_ratio, avg_slippage = EXCLUDED.avg_slippage,
        avg_fill_time_ms = EXCLUDED.avg_fill_time_ms, updated_at = now()
    WHERE (s.total_trades, s.winning_trades, s.losing_trades, s.breakeven_trades,
           s.gross_profit, s.gross_loss, s.net_pnl, s.total_commission, s.win_rate,
           s.profit_factor, s.avg_win, s.avg_loss, s.avg_trade, s.largest_win,
           s.largest_loss, s.max_drawdown, s.max_drawdown_duration_days, s.sharpe_ratio,
           s.sortino_ratio, s.calmar_ratio, s.avg_slippage, s.avg_fill_time_ms)
       IS DISTINCT FROM
          (EXCLUDED.total_trades, EXCLUDED.winning_trades, EXCLUDED.losing_trades,
           EXCLUDED.breakeven_trades, EXCLUDED.gross_profit, EXCLUDED.gross_loss,
           EXCLUDED.net_pnl, EXCLUDED.total_commission, EXCLUDED.win_rate,
           EXCLUDED.profit_factor, EXCLUDED.avg_win, EXCLUDED.avg_loss, EXCLUDED.avg_trade,
           EXCLUDED.largest_win, EXCLUDED.largest_loss, EXCLUDED.max_drawdown,
           EXCLUDED.max_drawdown_duration_days, EXCLUDED.sharpe_ratio,
           EXCLUDED.sortino_ratio, EXCLUDED.calmar_ratio, EXCLUDED.avg_slippage,
           EXCLUDED.avg_fill_time_ms)
),
deleted AS (  -- periods that no longer hold a closed trade (re-opened or moved by a late fill)
    DELETE FROM strategy_performance AS s
    USING (SELECT strategy_id, model_version, period_type, period_start FROM wanted
           EXCEPT
           SELECT strategy_id, model_version, period_type, period_start FROM periods) AS e
    WHERE (s.strategy_id, s.model_version, s.period_type, s.period_start)
        = (e.strategy_id, e.model_version, e.period_type, e.period_start)
    RETURNING 1
)
SELECT 'recomputed' AS kind, NULL AS column_name, NULL AS reason, count(*) AS n FROM figures
UNION ALL SELECT 'deleted', NULL, NULL, count(*) FROM deleted
UNION ALL SELECT 'undefined', column_name, reason, periods FROM notes;

-- name: prediction_tallies
-- Validated predictions of the given model versions made in the given ranges ($1 model
-- versions, $2 first instants, $3 end instants (exclusive)) on local days from $6 on (time
-- zone $5), counted per model version and local day, and per quarter hour if $7 (the kept
-- days' quarter hours, keep_prediction_tallies), as the model figures read them
-- (performance.PredictionTally): tally 1 per (predicted, actual) direction, 2 per
-- (confidence, right), 3 per (regime, right); a prediction without a confidence or a regime
-- is in no row of that tally. A prediction's regime is its symbol's last bar's at or before
-- predicted_at, if that bar is at most $4 old. A day's or a quarter hour's rows are at most
-- 10,001 confidences x 2 plus a few, however many predictions it holds: a live day of a
-- million predictions sent row by row took the rollup past 900 MB.
-- The validator records that regime with the outcome (start_regime, schema/24; 'none': the
-- bar had none), so most predictions are counted as they are. Only those without one
-- (validated before schema/24, or written by another writer) are placed among the bars: one
-- pass in time order for all of them, the predictions and the bars near them in the ranges'
-- spans merged per symbol, a running max giving each prediction the time of the last bar
-- before it, and a join on (symbol, time) that bar's regime. A lookup per prediction through
-- TimescaleDB's ChunkAppend, one query per day, cost 5 s a year; merging every prediction
-- with bars many times a second cost a live day's run 19 s after ten minutes of the soak.
WITH ranges AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
                  AS r(model_version, first_at, end_at)
),
predictions AS MATERIALIZED (
    SELECT p.model_version, p.symbol, p.predicted_at, p.predicted_direction,
           p.actual_direction, p.confidence_score, p.start_regime
    FROM ranges AS r
    JOIN model_predictions AS p
      ON p.model_version = r.model_version
     AND p.predicted_at >= r.first_at AND p.predicted_at < r.end_at
    WHERE p.validated_at IS NOT NULL AND p.actual_direction IS NOT NULL
      AND p.predicted_direction IS NOT NULL
),
widened AS (  -- the ranges' bars: from $4 before each range's start
    SELECT first_at - $4::interval AS first_at, end_at FROM ranges
),
islands AS (  -- overlapping spans (other versions' ranges) merged, so no bar is read twice
    SELECT first_at, end_at, count(*) FILTER (WHERE starts) OVER (ORDER BY first_at, end_at)
                                 AS island
    FROM (SELECT *, first_at > max(end_at) OVER (ORDER BY first_at, end_at ROWS BETWEEN
                                                     UNBOUNDED PRECEDING AND 1 PRECEDING)
                    IS NOT FALSE AS starts
          FROM widened) AS w
),
spans AS (SELECT min(first_at) AS first_at, max(end_at) AS end_at FROM islands GROUP BY island),
near AS (  -- where a prediction's bar can be: in bins as wide as $4 (positive), its bin or
           -- the one before; only those bars are merged (a fraction when bars are frequent)
    SELECT symbol, date_bin($4::interval, predicted_at, 'epoch') - n * $4::interval AS bin
    FROM predictions CROSS JOIN (VALUES (0), (1)) AS b(n)
    WHERE start_regime IS NULL
),
bars AS MATERIALIZED (
    SELECT m.symbol, m.timestamp, m.detected_regime
    FROM spans AS s
    JOIN market_conditions AS m ON m.timestamp >= s.first_at AND m.timestamp < s.end_at
    WHERE (m.symbol, date_bin($4::interval, m.timestamp, 'epoch'))
          IN (SELECT symbol, bin FROM near)
      AND EXISTS (SELECT FROM near)  -- none without a regime: no bar is read at all
),
timeline AS (  -- kind 0: a bar; 1: a prediction
    SELECT symbol, timestamp AS at, 0 AS kind, NULL::text AS model_version,
           NULL::text AS predicted_direction, NULL::text AS actual_direction,
           NULL::numeric AS confidence_score
    FROM bars
    UNION ALL
    SELECT symbol, predicted_at, 1, model_version, predicted_direction, actual_direction,
           confidence_score
    FROM predictions
    WHERE start_regime IS NULL
),
as_of AS (  -- a bar sorts before a prediction at the same time: "at or before"
    SELECT *, max(at) FILTER (WHERE kind = 0)
                  OVER (PARTITION BY symbol ORDER BY at, kind) AS bar_at
    FROM timeline
)
SELECT model_version, quarter, day, GROUPING(predicted_direction, confidence_score) AS tally,
       predicted_direction, actual_direction, confidence_score, detected_regime, "right",
       count(*) AS calls
FROM (
    SELECT a.model_version, a.at AS predicted_at, a.predicted_direction, a.actual_direction,
           a.confidence_score, b.detected_regime
    FROM as_of AS a
    LEFT JOIN bars AS b
      ON b.symbol = a.symbol AND b.timestamp = a.bar_at AND a.at - a.bar_at <= $4::interval
    WHERE a.kind = 1
    UNION ALL
    SELECT model_version, predicted_at, predicted_direction, actual_direction,
           confidence_score, nullif(start_regime, 'none')
    FROM predictions
    WHERE start_regime IS NOT NULL
) AS scored
CROSS JOIN LATERAL (  -- the quarter as in schema/29's marks
    SELECT CASE WHEN $7::boolean
                THEN date_bin('15 minutes', predicted_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')
           END AS quarter,
           (predicted_at AT TIME ZONE $5::text)::date AS day,
           predicted_direction = actual_direction AS "right"
) AS k
WHERE day >= $6::date
GROUP BY model_version, quarter, day,
         GROUPING SETS ((predicted_direction, actual_direction), (confidence_score, "right"),
                        (detected_regime, "right"))
HAVING CASE GROUPING(predicted_direction, confidence_score)
           WHEN 2 THEN confidence_score IS NOT NULL
           WHEN 3 THEN detected_regime IS NOT NULL
           ELSE true END;

-- name: tallies_kept
-- What the kept tallies hold (NULLs before the first run), and today in time zone $1.
SELECT k.time_zone, k.kept_from, (now() AT TIME ZONE $1::text)::date AS today
FROM (SELECT) AS nothing LEFT JOIN prediction_tallies_kept AS k ON true;

-- name: start_tallies_over
-- The kept tallies emptied, to keep days from $2 on, local to $1; every validated prediction
-- of those days is marked (whole UTC days), so this run counts them. The model days' calls
-- (schema/30) are emptied too: fill_model_day_calls counts them again.
WITH quarters AS (DELETE FROM prediction_quarter_tallies),
     days AS (DELETE FROM prediction_day_tallies),
     calls AS (DELETE FROM model_day_calls),
     marked AS (
         INSERT INTO rollup_pending (kind, model_version, day)
         SELECT DISTINCT 'prediction', model_version, (predicted_at AT TIME ZONE 'UTC')::date
         FROM model_predictions
         WHERE validated_at IS NOT NULL
           AND predicted_at >= ($2::date::timestamp AT TIME ZONE $1::text)
     )
INSERT INTO prediction_tallies_kept (time_zone, kept_from) VALUES ($1, $2)
ON CONFLICT (one) DO UPDATE SET time_zone = EXCLUDED.time_zone, kept_from = EXCLUDED.kept_from;

-- name: fill_model_day_calls
-- After start_tallies_over: every version's validated predictions and right calls per local
-- day (time zone $1), counted again (schema/30). One pass over the predictions.
INSERT INTO model_day_calls (model_version, day, calls, right_calls)
SELECT model_version, (predicted_at AT TIME ZONE $1::text)::date, count(*),
       count(*) FILTER (WHERE predicted_direction = actual_direction)
FROM model_predictions
WHERE validated_at IS NOT NULL AND actual_direction IS NOT NULL
  AND predicted_direction IS NOT NULL
GROUP BY 1, 2;

-- name: keep_model_day_calls
-- The recomputed model days' validated predictions and right calls ($1 model versions, $2
-- days, $3 calls, $4 right calls; 0 calls: the day has none, its row goes).
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::date[], $3::bigint[], $4::bigint[])
                  AS g(model_version, day, calls, right_calls)
),
gone AS (
    DELETE FROM model_day_calls AS c USING given AS g
    WHERE g.calls = 0 AND c.model_version = g.model_version AND c.day = g.day
)
INSERT INTO model_day_calls AS c
SELECT * FROM given WHERE calls > 0
ON CONFLICT (model_version, day) DO UPDATE
    SET calls = EXCLUDED.calls, right_calls = EXCLUDED.right_calls
    WHERE (c.calls, c.right_calls) IS DISTINCT FROM (EXCLUDED.calls, EXCLUDED.right_calls);

-- name: keep_tallies_from
-- The kept tallies without the local days before $1 (time zone $2), which leave the live
-- days. The bound on quarter only lets the index find them: a prediction made before day $1
-- began is in a quarter hour that began before it too.
WITH quarters AS (
    DELETE FROM prediction_quarter_tallies
    WHERE quarter < ($1::date::timestamp AT TIME ZONE $2::text) AND day < $1::date
),
days AS (DELETE FROM prediction_day_tallies WHERE day < $1::date)
UPDATE prediction_tallies_kept SET kept_from = $1;

-- name: quarter_tallies_table
-- The run's recounted quarter hours (prediction_tallies' rows, read where the facts are
-- read), kept on the primary for keep_prediction_tallies; emptied at the end of the run.
CREATE TEMP TABLE IF NOT EXISTS rollup_quarter_tallies (LIKE prediction_quarter_tallies)
ON COMMIT DELETE ROWS;

-- name: keep_prediction_tallies
-- The recounted quarter hours ($1 model versions, $2 first instants, $3 end instants, the
-- ranges prediction_tallies was given) take their new rows from rollup_quarter_tallies, and
-- each day's sums change by the difference: a quarter hour is counted once in its days
-- however often it is recounted. Rows of other quarter hours are not read.
WITH ranges AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
                  AS r(model_version, first_at, end_at)
),
stale AS (
    DELETE FROM prediction_quarter_tallies AS t
    USING ranges AS r
    WHERE t.model_version = r.model_version AND t.quarter >= r.first_at AND t.quarter < r.end_at
    RETURNING t.model_version, t.day, t.tally, t.predicted_direction, t.actual_direction,
              t.confidence_score, t.detected_regime, t."right", -t.calls AS calls
),
fresh AS (
    INSERT INTO prediction_quarter_tallies SELECT * FROM rollup_quarter_tallies
    RETURNING model_version, day, tally, predicted_direction, actual_direction,
              confidence_score, detected_regime, "right", calls
),
changes AS (
    SELECT model_version, day, tally, predicted_direction, actual_direction, confidence_score,
           detected_regime, "right", sum(calls) AS calls
    FROM (SELECT * FROM stale UNION ALL SELECT * FROM fresh) AS c
    GROUP BY model_version, day, tally, predicted_direction, actual_direction,
             confidence_score, detected_regime, "right"
    HAVING sum(calls) <> 0
)
INSERT INTO prediction_day_tallies AS d
SELECT * FROM changes
ON CONFLICT ON CONSTRAINT prediction_day_tallies_key DO UPDATE SET calls = d.calls + EXCLUDED.calls;

-- name: drop_spent_day_tallies
-- The counts keep_prediction_tallies brought to zero (an upsert cannot delete), or below,
-- which the rollup reports as an error: the kept tallies disagree.
DELETE FROM prediction_day_tallies WHERE calls <= 0 RETURNING model_version, day, calls;

-- name: day_tallies
-- The kept tallies of the given model days ($1 model versions, $2 local days), as
-- prediction_tallies' rows without the quarter hour.
SELECT t.model_version, t.day, t.tally, t.predicted_direction, t.actual_direction,
       t.confidence_score, t.detected_regime, t."right", t.calls
FROM unnest($1::text[], $2::date[]) AS w(model_version, day)
JOIN prediction_day_tallies AS t ON t.day = w.day AND t.model_version = w.model_version;

-- name: model_identity
-- Per model version: its type (newest prediction, else newest offline evaluation) and the
-- status of its newest offline evaluation.
SELECT v.model_version,
       coalesce(
           (SELECT p.model_type FROM model_predictions AS p
            WHERE p.model_version = v.model_version ORDER BY p.predicted_at DESC LIMIT 1),
           o.model_type, 'unknown') AS model_type,
       coalesce(o.status, 'evaluating') AS status
FROM unnest($1::text[]) AS v(model_version)
LEFT JOIN LATERAL (
    SELECT m.model_type, m.status FROM model_performance AS m
    WHERE m.model_version = v.model_version AND m.source = 'offline'
    ORDER BY m.evaluation_date DESC, m.id DESC LIMIT 1
) AS o ON true;

-- name: upsert_live_model_days
-- $1..$17: one array per column, one element per model day (as upsert_strategy_periods: a
-- statement per day cost a year's rollup 0.12 s). live_accuracy is the day's accuracy.
INSERT INTO model_performance AS m (
    source, model_version, model_type, evaluation_date, status, testing_samples,
    accuracy, precision, recall, f1_score, auc_roc, brier_score, expected_calibration_error,
    trending_up_accuracy, trending_down_accuracy, ranging_accuracy, volatile_accuracy,
    live_accuracy, live_pnl_contribution
)
SELECT 'live', d.model_version, d.model_type, d.evaluation_date, d.status, d.testing_samples,
       d.accuracy, d.precision, d.recall, d.f1_score, d.auc_roc, d.brier_score,
       d.expected_calibration_error, d.trending_up_accuracy, d.trending_down_accuracy,
       d.ranging_accuracy, d.volatile_accuracy, d.accuracy, d.live_pnl_contribution
FROM unnest(
    $1::text[], $2::text[], $3::date[], $4::text[], $5::integer[],
    $6::text[]::numeric[], $7::text[]::numeric[], $8::text[]::numeric[],
    $9::text[]::numeric[], $10::text[]::numeric[], $11::text[]::numeric[],
    $12::text[]::numeric[], $13::text[]::numeric[], $14::text[]::numeric[],
    $15::text[]::numeric[], $16::text[]::numeric[], $17::text[]::numeric[]
) AS d(model_version, model_type, evaluation_date, status, testing_samples, accuracy,
       precision, recall, f1_score, auc_roc, brier_score, expected_calibration_error,
       trending_up_accuracy, trending_down_accuracy, ranging_accuracy, volatile_accuracy,
       live_pnl_contribution)
ON CONFLICT (model_version, evaluation_date) WHERE source = 'live' DO UPDATE SET
    model_type = EXCLUDED.model_type, status = EXCLUDED.status,
    testing_samples = EXCLUDED.testing_samples, accuracy = EXCLUDED.accuracy,
    precision = EXCLUDED.precision, recall = EXCLUDED.recall, f1_score = EXCLUDED.f1_score,
    auc_roc = EXCLUDED.auc_roc, brier_score = EXCLUDED.brier_score,
    expected_calibration_error = EXCLUDED.expected_calibration_error,
    trending_up_accuracy = EXCLUDED.trending_up_accuracy,
    trending_down_accuracy = EXCLUDED.trending_down_accuracy,
    ranging_accuracy = EXCLUDED.ranging_accuracy, volatile_accuracy = EXCLUDED.volatile_accuracy,
    live_accuracy = EXCLUDED.live_accuracy, live_pnl_contribution = EXCLUDED.live_pnl_contribution
WHERE (m.model_type, m.status, m.testing_samples, m.accuracy, m.precision, m.recall,
       m.f1_score, m.auc_roc, m.brier_score, m.expected_calibration_error,
       m.trending_up_accuracy, m.trending_down_accuracy, m.ranging_accuracy,
       m.volatile_accuracy, m.live_accuracy, m.live_pnl_contribution)
   IS DISTINCT FROM
      (EXCLUDED.model_type, EXCLUDED.status, EXCLUDED.testing_samples, EXCLUDED.accuracy,
       EXCLUDED.precision, EXCLUDED.recall, EXCLUDED.f1_score, EXCLUDED.auc_roc,
       EXCLUDED.brier_score, EXCLUDED.expected_calibration_error,
       EXCLUDED.trending_up_accuracy, EXCLUDED.trending_down_accuracy,
       EXCLUDED.ranging_accuracy, EXCLUDED.volatile_accuracy, EXCLUDED.live_accuracy,
       EXCLUDED.live_pnl_contribution);

-- name: delete_live_model_days
DELETE FROM model_performance AS m
USING unnest($1::text[], $2::date[]) AS e(model_version, evaluation_date)
WHERE m.source = 'live'
  AND (m.model_version, m.evaluation_date) = (e.model_version, e.evaluation_date);

-- name: offline_live_figures
-- For each offline evaluation of the given versions: right calls and validated predictions
-- made since its evaluation date (the kept days' sums, schema/30), and the net P&L of that
-- version's trades closed since.
SELECT o.id, o.live_accuracy, o.live_pnl_contribution, c.right_calls, c.calls,
       (SELECT sum(t.net_pnl) FROM trade_outcomes AS t
        WHERE t.model_version = o.model_version
          AND t.outcome_type IN ('WIN', 'LOSS', 'BREAKEVEN')
          AND t.exit_time >= (o.evaluation_date::timestamp AT TIME ZONE $2::text)) AS net_pnl
FROM model_performance AS o
CROSS JOIN LATERAL (
    SELECT coalesce(sum(d.right_calls), 0)::bigint AS right_calls,
           coalesce(sum(d.calls), 0)::bigint AS calls
    FROM model_day_calls AS d
    WHERE d.model_version = o.model_version AND d.day >= o.evaluation_date
) AS c
WHERE o.source = 'offline' AND o.model_version = ANY($1::text[]);

-- name: set_offline_live_figures
UPDATE model_performance SET live_accuracy = $2, live_pnl_contribution = $3 WHERE id = $1;

-- name: replica_caught_up
-- On the replica: has it replayed up to the primary's WAL position $1?
SELECT pg_last_wal_replay_lsn() IS NULL OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn;

-- name: primary_lsn
SELECT pg_current_wal_insert_lsn()::text;

-- name: lock
-- $1: the rollup's advisory lock key: one rollup at a time (a session lock, released in a
-- ``finally``).
SELECT pg_advisory_lock($1);

-- name: unlock
SELECT pg_advisory_unlock($1);
