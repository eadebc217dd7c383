-- Named queries of the A/B test evaluation (consumers/improvement/abtest.py).

-- name: running_tests
SELECT test_id FROM ab_tests WHERE status = 'running' ORDER BY started_at;

-- name: lock_running_test
-- One evaluator at a time per test (SKIP LOCKED: another one is on it); $1 test id. A test
-- still short of trades at the end of its duration runs on until $2 times its duration.
SELECT test_id, test_name, test_type, control_version, treatment_version, started_at,
       scheduled_duration_hours, success_metric,
       COALESCE(minimum_improvement_percent, 0) AS minimum_improvement_percent,
       now() AS evaluated_at,
       started_at + make_interval(hours => scheduled_duration_hours) <= now() AS duration_over,
       started_at + make_interval(hours => scheduled_duration_hours) * $2::float8
           AS longest_until
FROM ab_tests
WHERE test_id = $1 AND status = 'running'
FOR UPDATE SKIP LOCKED;

-- name: arm_days
-- One arm's closed trades per local exit day, with the columns (and definitions) of the
-- rollup's trade_days: trades entered since the test started ($3) and closed by $4. $1 the
-- test type (a strategy test names strategy ids, the others model versions), $2 the version,
-- $5 the time zone.
SELECT (t.exit_time AT TIME ZONE $5::text)::date AS day,
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
       coalesce(sum(t.fill_latency_count), 0)::bigint AS fill_latency_count,
       -- each trade's return on what it put at stake, for the significance test
       array_agg((t.net_pnl / nullif(t.entry_price * t.quantity, 0))::float8
                 ORDER BY t.exit_time, t.trade_id) AS trade_returns
FROM trade_outcomes AS t
WHERE CASE WHEN $1 = 'strategy' THEN t.strategy_id ELSE t.model_version END = $2
  AND t.entry_time >= $3 AND t.exit_time <= $4
  AND t.outcome_type IN ('WIN', 'LOSS', 'BREAKEVEN')
GROUP BY 1;

-- name: record_evaluation
-- $1 test; $2, $3 the arms' metrics; $4 improvement of the success metric (percent);
-- $5 the status it leaves ('running' while the test goes on); $6 when it ended; $7 why.
UPDATE ab_tests
SET control_metrics = $2::jsonb, treatment_metrics = $3::jsonb, improvement_percent = $4,
    status = $5, ended_at = $6, conclusion = $7, updated_at = now()
WHERE test_id = $1 AND status = 'running';

-- name: announce_conclusion
-- The improvement event the notifier posts: what was decided, before and after. Its id is
-- derived from the test and the outcome: decided again after a rolled-back publish, it is the
-- same event (consumers/improvement/announce.py).
INSERT INTO improvement_events (
    event_id, event_type, event_timestamp, component_type, component_id, old_value, new_value,
    trigger_reason, performance_before, performance_after, improvement_metrics, automated)
VALUES (md5(format('ab_test:%s:%s', $4::text, $1::text))::uuid, 'ab_test_' || $1::text, $2, $3, $4,
        $5::jsonb, $6::jsonb, 'A/B test concluded', $7::jsonb, $8::jsonb, $9::jsonb, true)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;
