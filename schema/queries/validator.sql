-- Named queries of the validator (consumers/validator.py). Definitions are in README.md.
-- Candidates are selected (and row-locked) first, then one statement per batch computes and
-- writes the outcomes of all of them. The bar-driven path locks in key order and waits (no
-- deadlock); the sweep skips rows another validator holds.

-- name: predictions_near_bars
-- Predictions whose start or horizon bar may be one of the bars in the given per-symbol time
-- ranges ($1 symbols, $2 earliest, $3 latest bar time), within the gap tolerance ($4), or
-- that are unvalidated and whose horizon the ranges now cover. $5: the longest horizon the
-- bar-driven path looks back for (longer ones are left to the sweep).
SELECT p.prediction_id, p.predicted_at,
       p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) AS horizon_end
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS r(symbol, first_bar, last_bar)
JOIN model_predictions AS p
  ON p.symbol = r.symbol
 AND p.predicted_at BETWEEN r.first_bar - $5::interval AND r.last_bar + $4::interval
WHERE (p.predicted_at BETWEEN r.first_bar AND r.last_bar + $4::interval)
   OR (p.predicted_at + make_interval(mins => p.prediction_horizon_minutes)
       BETWEEN r.first_bar AND r.last_bar + $4::interval)
   OR (p.validated_at IS NULL
       AND p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) <= r.last_bar)
ORDER BY p.prediction_id, p.predicted_at
FOR UPDATE OF p;

-- name: predictions_backlog
-- Unvalidated predictions past their horizon, oldest first, after the keyset cursor
-- ($1 predicted_at, $2 prediction_id), at most $3; rows another validator holds are skipped.
SELECT prediction_id, predicted_at,
       predicted_at + make_interval(mins => prediction_horizon_minutes) AS horizon_end
FROM model_predictions
WHERE validated_at IS NULL
  AND predicted_at + make_interval(mins => prediction_horizon_minutes) <= now()
  AND (predicted_at, prediction_id) > ($1::timestamptz, $2::uuid)
ORDER BY predicted_at, prediction_id
LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: predictions_backlog_size
SELECT count(*)
FROM model_predictions
WHERE validated_at IS NULL
  AND predicted_at + make_interval(mins => prediction_horizon_minutes) <= now();

-- name: validate_predictions
-- $1, $2: the candidates' keys; $3: gap tolerance; $4: neutral band; $5, $6: the earliest
-- predicted_at and the latest horizon end among them. The bar lookups are bounded by $5 - $3
-- and $6 as well: redundant for the result, but scalar, so TimescaleDB prunes bar chunks once
-- per statement instead of once per lookup (with a year of daily chunks, 10x and more).
-- start bar = the last bar at or before predicted_at, end bar = the last bar at or before
-- predicted_at + horizon; each must be at most $3 older than its instant, and some bar must
-- exist at or after the horizon end (the data has moved past it). Only rows whose outcome
-- changes are written; returns each written row's validation lag.
WITH candidates AS (
    SELECT p.prediction_id, p.predicted_at, p.symbol, p.predicted_direction,
           p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) AS horizon_end
    FROM unnest($1::uuid[], $2::timestamptz[]) AS k(prediction_id, predicted_at)
    JOIN model_predictions AS p USING (prediction_id, predicted_at)
),
latest_bars AS MATERIALIZED (  -- each symbol's newest bar: one lookup per symbol, not per prediction
    SELECT s.symbol, b.timestamp
    FROM (SELECT DISTINCT symbol FROM candidates) AS s
    JOIN LATERAL (
        SELECT m.timestamp FROM market_conditions AS m
        WHERE m.symbol = s.symbol AND m.timestamp >= $5::timestamptz
        ORDER BY m.timestamp DESC LIMIT 1
    ) AS b ON true
),
priced AS (
    SELECT c.prediction_id, c.predicted_at, c.predicted_direction, c.horizon_end,
           round((e.close - s.close) / s.close, 8) AS actual_return
    FROM candidates AS c
    JOIN LATERAL (
        SELECT m.close, m.timestamp FROM market_conditions AS m
        WHERE m.symbol = c.symbol AND m.timestamp <= c.predicted_at
          AND m.timestamp >= $5::timestamptz - $3::interval AND m.timestamp <= $6::timestamptz
        ORDER BY m.timestamp DESC LIMIT 1
    ) AS s ON c.predicted_at - s.timestamp <= $3::interval
    JOIN LATERAL (
        SELECT m.close, m.timestamp FROM market_conditions AS m
        WHERE m.symbol = c.symbol AND m.timestamp <= c.horizon_end
          AND m.timestamp >= $5::timestamptz - $3::interval AND m.timestamp <= $6::timestamptz
        ORDER BY m.timestamp DESC LIMIT 1
    ) AS e ON c.horizon_end - e.timestamp <= $3::interval
    JOIN latest_bars AS l ON l.symbol = c.symbol AND l.timestamp >= c.horizon_end
),
outcomes AS (
    SELECT *,
           CASE WHEN actual_return > $4::numeric THEN 'LONG'
                WHEN actual_return < -$4::numeric THEN 'SHORT'
                ELSE 'NEUTRAL' END AS actual_direction
    FROM priced
)
UPDATE model_predictions AS p
SET actual_return = o.actual_return,
    actual_direction = o.actual_direction,
    prediction_accuracy = (o.predicted_direction = o.actual_direction),
    validated_at = now()
FROM outcomes AS o
WHERE p.prediction_id = o.prediction_id AND p.predicted_at = o.predicted_at
  AND (p.validated_at IS NULL
       OR (p.actual_return, p.actual_direction) IS DISTINCT FROM (o.actual_return, o.actual_direction))
RETURNING extract(epoch FROM p.validated_at - o.horizon_end)::float8 AS lag_seconds;

-- name: trades_near_bars
-- Trades of the given symbols open at some time in the given ranges ($1 symbols, $2 earliest,
-- $3 latest bar time).
SELECT o.trade_id
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS r(symbol, first_bar, last_bar)
JOIN trade_outcomes AS o
  ON o.symbol = r.symbol AND o.entry_time <= r.last_bar
 AND (o.exit_time IS NULL OR o.exit_time >= r.first_bar);

-- name: trades_to_sweep
-- Open trades, and trades entered since $1 whose excursions were never computed.
SELECT trade_id FROM trade_outcomes WHERE exit_time IS NULL
UNION
SELECT trade_id FROM trade_outcomes
WHERE entry_time >= $1 AND max_favorable_excursion IS NULL;

-- name: update_excursions
-- $1: trade ids. Bars from entry_time to exit_time (to now while open), both inclusive.
-- LONG: favourable = (max high - entry price) x quantity, adverse = (entry price - min low)
-- x quantity; SHORT the mirror image. Both are amounts of money >= 0, rounded to 4 places.
WITH trades AS (
    SELECT trade_id, entry_time, symbol, exit_time
    FROM trade_outcomes
    WHERE trade_id = ANY($1::uuid[])
    ORDER BY trade_id, entry_time
    FOR UPDATE
),
extremes AS (
    SELECT t.trade_id, t.entry_time, max(m.high) AS highest, min(m.low) AS lowest
    FROM trades AS t
    JOIN market_conditions AS m
      ON m.symbol = t.symbol AND m.timestamp >= t.entry_time
     AND (t.exit_time IS NULL OR m.timestamp <= t.exit_time)
    GROUP BY t.trade_id, t.entry_time
),
excursions AS (
    SELECT o.trade_id, o.entry_time,
           round(greatest(0, CASE WHEN o.direction = 'LONG' THEN x.highest - o.entry_price
                                  ELSE o.entry_price - x.lowest END) * o.quantity, 4) AS favorable,
           round(greatest(0, CASE WHEN o.direction = 'LONG' THEN o.entry_price - x.lowest
                                  ELSE x.highest - o.entry_price END) * o.quantity, 4) AS adverse
    FROM extremes AS x
    JOIN trade_outcomes AS o USING (trade_id, entry_time)
)
UPDATE trade_outcomes AS o
SET max_favorable_excursion = e.favorable,
    max_adverse_excursion = e.adverse,
    duration_seconds = COALESCE(o.duration_seconds,
                                extract(epoch FROM o.exit_time - o.entry_time)::integer)
FROM excursions AS e
WHERE o.trade_id = e.trade_id AND o.entry_time = e.entry_time
  AND ((o.max_favorable_excursion, o.max_adverse_excursion) IS DISTINCT FROM (e.favorable, e.adverse)
       OR (o.duration_seconds IS NULL AND o.exit_time IS NOT NULL))
RETURNING o.trade_id;

-- name: bars_visible
-- How many of the given bars ($1 symbols, $2 times, $3 closes, $4 highs, $5 lows) are stored
-- with exactly these values: the validator waits for the ingest consumer to write them.
SELECT count(*)
FROM unnest($1::text[], $2::timestamptz[], $3::numeric[], $4::numeric[], $5::numeric[])
     AS b(symbol, timestamp, close, high, low)
JOIN market_conditions AS m USING (symbol, timestamp)
WHERE m.close = b.close AND m.high = b.high AND m.low = b.low;
