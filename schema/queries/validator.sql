-- Named queries of the validator (consumers/analytics/validator.py). Definitions are in docs/analytics.md.
-- Candidates are selected first, then one statement per batch computes and writes the
-- outcomes of all of them. No row locks: TimescaleDB cannot lock tuples in compressed chunks
-- ("locking compressed tuples is not supported"), and predictions older than the compression
-- horizon still get late and corrected bars. Validators serialise instead on transaction
-- advisory locks, per symbol for predictions and per trade for excursions (the key the fills
-- consumer locks too), always taken in sorted order, so two validators never deadlock.

-- name: lock_symbols
-- $1 sorted: every validator takes the locks in one order.
SELECT pg_advisory_xact_lock(hashtextextended('cie.validator.symbol:' || symbol, 0))
FROM unnest($1::text[]) AS symbol;

-- name: lock_trades
-- $1 sorted. The same key as ingest.sql's fills_lock_trades: a trade's fills and its
-- excursions are never written at the same time. Taken only to write the excursions, which
-- are computed before it (under the trades' symbols' locks): a fills flush waits for a write,
-- never for the bars' scan (the soak's 5-21 s stalls, bench/README.md).
SELECT pg_advisory_xact_lock(hashtextextended(trade_id::text, 0))
FROM unnest($1::uuid[]) AS trade_id;

-- name: trade_symbols
-- The symbols of the trades $1, sorted: update_excursions locks them before it computes.
SELECT DISTINCT symbol FROM trade_outcomes WHERE trade_id = ANY($1::uuid[]) ORDER BY symbol;

-- name: writer_marks_rollup
-- For this transaction, the prediction rollup trigger leaves the marks to validate_predictions
-- (schema/17-rollup-marks-by-writer.sql).
SET LOCAL cie.writer_marks_rollup = 'on';

-- name: predictions_near_bars
-- Predictions whose start or horizon bar may be one of the bars in the given per-symbol time
-- ranges ($1 symbols, $2 earliest, $3 latest bar time), or that are unvalidated and whose
-- horizon the ranges now cover. $5: the longest horizon the bar-driven path looks back for
-- (longer ones are left to the sweep).
-- A bar is the start (or end) bar of the instants from its time until the symbol's next bar,
-- and at most the gap tolerance ($4) after it: the ranges reach that far ("reach"). With no
-- later bar stored, no instant after the last one can be validated yet (that needs a bar at
-- or after its horizon): such predictions are taken when such a bar comes.
-- Bounded so, a batch takes the few predictions its bars can change, not the gap tolerance's
-- worth after them: five minutes of predictions every batch, which kept a live validator
-- busy and one behind by more than the tolerance from ever catching up.
-- Each of the three kinds is one index range as long as the batch: made in the ranges
-- (idx_model_predictions_symbol), ending in them, and unvalidated and ending before their last
-- bar (idx_model_predictions_horizon, schema/31; the horizon end in UTC as that index has it).
-- Read as one range of predicted_at a day long, a batch cost grew with the predictions stored.
-- The bound on predicted_at is written on its UTC timestamp, which no index has: as a filter.
-- Written on predicted_at, it let the planner AND the horizon range with a day's range of
-- idx_model_predictions_model (3.5 ms a symbol, where the horizon range alone takes 0.1 ms).
-- (The third kind's predicted_at <= reach follows from its horizon ending by the last bar.)
SELECT p.prediction_id, p.predicted_at, p.symbol,
       p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) AS horizon_end
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS r(symbol, first_bar, last_bar)
CROSS JOIN LATERAL (
    SELECT least(coalesce(min(m."timestamp"), r.last_bar), r.last_bar + $4::interval) AS reach,
           coalesce(max(m."timestamp"), r.last_bar) AS latest
    FROM market_conditions AS m
    WHERE m.symbol = r.symbol AND m."timestamp" > r.last_bar
) AS n
CROSS JOIN LATERAL (
    -- made in the range, and validatable: a bar at or after its horizon is stored (a
    -- prediction whose start bar just came, live, is not: it is taken with the bar that
    -- passes its horizon)
    SELECT p.prediction_id, p.predicted_at, p.symbol, p.prediction_horizon_minutes
    FROM model_predictions AS p
    WHERE p.symbol = r.symbol AND p.predicted_at BETWEEN r.first_bar AND n.reach
      AND p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) <= n.latest
    UNION
    -- ending in the range, validated or not, and validatable
    SELECT p.prediction_id, p.predicted_at, p.symbol, p.prediction_horizon_minutes
    FROM model_predictions AS p
    WHERE p.symbol = r.symbol AND (p.validated_at IS NULL) = ANY ('{false,true}'::boolean[])
      AND (p.predicted_at AT TIME ZONE 'UTC') + make_interval(mins => p.prediction_horizon_minutes)
          BETWEEN (r.first_bar AT TIME ZONE 'UTC') AND (n.reach AT TIME ZONE 'UTC')
      AND (p.predicted_at AT TIME ZONE 'UTC') >= (r.first_bar - $5::interval) AT TIME ZONE 'UTC'
      AND p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) <= n.latest
    UNION
    -- unvalidated, made within the longest horizon before the range and ending by its last bar
    SELECT p.prediction_id, p.predicted_at, p.symbol, p.prediction_horizon_minutes
    FROM model_predictions AS p
    WHERE p.symbol = r.symbol AND (p.validated_at IS NULL) = true
      AND (p.predicted_at AT TIME ZONE 'UTC') + make_interval(mins => p.prediction_horizon_minutes)
          BETWEEN ((r.first_bar - $5::interval) AT TIME ZONE 'UTC')
              AND (r.last_bar AT TIME ZONE 'UTC')
      AND (p.predicted_at AT TIME ZONE 'UTC') >= (r.first_bar - $5::interval) AT TIME ZONE 'UTC'
) AS p
ORDER BY p.prediction_id, p.predicted_at;

-- name: predictions_backlog
-- Unvalidated predictions past their horizon, oldest first, after the keyset cursor
-- ($1 predicted_at, $2 prediction_id), at most $3.
SELECT prediction_id, predicted_at, symbol,
       predicted_at + make_interval(mins => prediction_horizon_minutes) AS horizon_end
FROM model_predictions
WHERE validated_at IS NULL
  AND predicted_at + make_interval(mins => prediction_horizon_minutes) <= now()
  AND (predicted_at, prediction_id) > ($1::timestamptz, $2::uuid)
ORDER BY predicted_at, prediction_id
LIMIT $3;

-- name: predictions_backlog_size
SELECT count(*)
FROM model_predictions
WHERE validated_at IS NULL
  AND predicted_at + make_interval(mins => prediction_horizon_minutes) <= now();

-- name: validate_predictions
-- Computes and writes the outcomes of the given predictions in one statement, and marks
-- what it changed for the rollup (one row per model version and quarter hour; the transaction sets
-- cie.writer_marks_rollup so the row trigger does not mark each row again).
-- $1..$4: the candidates (prediction_id, predicted_at, symbol, horizon end); $5: gap
-- tolerance; $6: neutral band; $7, $8: the earliest predicted_at and the latest horizon end;
-- $9: the latest predicted_at; $10: bars per instant past which instants are looked up.
-- start bar = the last bar at or before predicted_at, end bar = the last bar at or before
-- predicted_at + horizon; each must be at most $5 older than its instant, and some bar must
-- exist at or after the horizon end (the data has moved past it).
-- Predictions whose two instants both fall on a bar's time (most when predictions are made on
-- bars and horizons are whole minutes) are priced first by two equi-joins on (symbol, time),
-- which the planner does as a hash join over the span's bars or as index lookups, whichever
-- reads less. The others' bars are found one of two ways, chosen by how many bars their span
-- holds per instant (estimated from each symbol's first bars in it, at most 101, and their
-- extent):
-- - few (bars a minute or sparser): an as-of join done as one pass in time order: the span's
--   bars ($7 - $5 to $8) and the instants are merged per symbol, and each instant takes the
--   last bar before it (bars_so_far numbers the bars; an instant shares the number of the bar
--   it follows). 50,000 index lookups through TimescaleDB's ChunkAppend cost 3x this;
-- - many (bars many times a second, as in the soak: a batch's span is the longest horizon's
--   worth of bars, 1.7 million, and merging them took 2 s a batch, more than a batch's bars
--   took to arrive): an index lookup per instant, the newest bar at or before it.
-- Nothing here reads model_predictions before the UPDATE: on TimescaleDB an UPDATE joined to a
-- CTE that read the same compressed chunk updated nothing the first time (2.28.3: the rows it
-- decompressed were not visible to it). The candidates come in as parameters instead.
-- Each outcome carries its start bar's regime ('none' if it has none), which the rollup reads
-- for the live model figures (schema/24).
-- Returns one row: the written rows' validation lags, and the outcomes too large for
-- DECIMAL(18, 8) (absurd bars, e.g. a close from 1e-8 to 1e9), which are skipped, not written.
WITH candidates AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[])
                  AS c(prediction_id, predicted_at, symbol, horizon_end)
),
symbols AS MATERIALIZED (SELECT DISTINCT symbol FROM candidates),
latest_bars AS MATERIALIZED (  -- each symbol's newest bar
    SELECT s.symbol, b.timestamp
    FROM symbols AS s
    JOIN LATERAL (
        SELECT m.timestamp FROM market_conditions AS m
        WHERE m.symbol = s.symbol AND m.timestamp >= $7::timestamptz
        ORDER BY m.timestamp DESC LIMIT 1
    ) AS b ON true
),
on_bars AS MATERIALIZED (  -- the bars at the instants' own times, if any
    SELECT c.prediction_id, c.predicted_at, c.symbol, c.horizon_end,
           s.close AS start_close, s.detected_regime AS start_regime, e.close AS end_close
    FROM candidates AS c
    LEFT JOIN market_conditions AS s
      ON s.symbol = c.symbol AND s.timestamp = c.predicted_at
     AND s.timestamp BETWEEN $7::timestamptz AND $9::timestamptz
    LEFT JOIN market_conditions AS e
      ON e.symbol = c.symbol AND e.timestamp = c.horizon_end
     AND e.timestamp BETWEEN $7::timestamptz AND $8::timestamptz
),
off_bars AS MATERIALIZED (  -- the others: both their instants are looked up or merged
    SELECT prediction_id, predicted_at, symbol, horizon_end
    FROM on_bars
    WHERE start_close IS NULL OR end_close IS NULL
),
off_symbols AS MATERIALIZED (SELECT DISTINCT symbol FROM off_bars),
sampled AS MATERIALIZED (  -- per symbol: its first few bars of the span, and their extent
    SELECT s.symbol, count(*) AS bars,
           extract(epoch FROM max(b.timestamp) - min(b.timestamp)) AS seconds
    FROM off_symbols AS s
    CROSS JOIN LATERAL (
        SELECT m.timestamp FROM market_conditions AS m
        WHERE m.symbol = s.symbol
          AND m.timestamp >= $7::timestamptz - $5::interval AND m.timestamp <= $8::timestamptz
        ORDER BY m.timestamp LIMIT least($10::bigint, 100) + 1) AS b
    GROUP BY s.symbol
),
dense AS MATERIALIZED (  -- the span's bars, estimated from the samples, > $10 per instant
    SELECT coalesce(sum(CASE WHEN bars <= least($10::bigint, 100) OR seconds = 0
                             THEN bars  -- all of them
                             ELSE bars / seconds * extract(epoch FROM $8::timestamptz
                                                           - $7::timestamptz + $5::interval)
                        END), 0) > $10::bigint * 2 * (SELECT count(*) FROM off_bars) AS dense
    FROM sampled
),
looked_up AS (  -- many bars: the newest bar at or before each instant, within the tolerance
    SELECT o.prediction_id, o.predicted_at, o.horizon_end, o.symbol,
           round((e.close - s.close) / s.close, 8) AS actual_return, s.detected_regime
    FROM off_bars AS o
    CROSS JOIN LATERAL (
        SELECT m.close, m.detected_regime FROM market_conditions AS m
        WHERE m.symbol = o.symbol AND m.timestamp <= o.predicted_at
          AND m.timestamp >= o.predicted_at - $5::interval
        ORDER BY m.timestamp DESC LIMIT 1) AS s
    CROSS JOIN LATERAL (
        SELECT m.close FROM market_conditions AS m
        WHERE m.symbol = o.symbol AND m.timestamp <= o.horizon_end
          AND m.timestamp >= o.horizon_end - $5::interval
        ORDER BY m.timestamp DESC LIMIT 1) AS e
    WHERE (SELECT dense FROM dense)
),
span_bars AS MATERIALIZED (  -- few bars: the span's bars of those symbols, merged
    SELECT s.symbol, m.timestamp AS at, m.close, m.detected_regime
    FROM off_symbols AS s
    JOIN LATERAL (
        SELECT m.timestamp, m.close, m.detected_regime FROM market_conditions AS m
        WHERE m.symbol = s.symbol
          AND m.timestamp >= $7::timestamptz - $5::interval AND m.timestamp <= $8::timestamptz
    ) AS m ON true
    WHERE NOT (SELECT dense FROM dense)
),
timeline AS (  -- kind 0: a bar of those symbols; 1: a prediction's start; 2: its horizon end
    SELECT symbol, at, 0 AS kind, close, detected_regime, NULL::uuid AS prediction_id,
           NULL::timestamptz AS predicted_at, NULL::timestamptz AS horizon_end
    FROM span_bars
    UNION ALL
    SELECT symbol, predicted_at, 1, NULL, NULL, prediction_id, predicted_at, horizon_end
    FROM off_bars
    WHERE NOT (SELECT dense FROM dense)
    UNION ALL
    SELECT symbol, horizon_end, 2, NULL, NULL, prediction_id, predicted_at, horizon_end
    FROM off_bars
    WHERE NOT (SELECT dense FROM dense)
),
numbered AS (  -- a bar sorts before an instant at the same time: "at or before"
    SELECT *, count(close) OVER (PARTITION BY symbol ORDER BY at, kind) AS bars_so_far
    FROM timeline
),
as_of AS (  -- first row of each (symbol, bars_so_far) group: the bar the instants follow
    SELECT symbol, kind, prediction_id, predicted_at, horizon_end, at,
           first_value(at) OVER bar AS bar_at, first_value(close) OVER bar AS bar_close,
           first_value(detected_regime) OVER bar AS bar_regime
    FROM numbered
    WHERE bars_so_far > 0
    WINDOW bar AS (PARTITION BY symbol, bars_so_far ORDER BY at, kind)
),
priced AS (  -- both bars found, each within the gap tolerance of its instant
    SELECT prediction_id, predicted_at, horizon_end, symbol,
           round((end_close - start_close) / start_close, 8) AS actual_return, start_regime
    FROM on_bars
    WHERE start_close IS NOT NULL AND end_close IS NOT NULL
    UNION ALL
    SELECT prediction_id, predicted_at, horizon_end, symbol, actual_return, detected_regime
    FROM looked_up
    UNION ALL
    SELECT prediction_id, predicted_at, horizon_end, symbol,
           round((max(bar_close) FILTER (WHERE kind = 2) - max(bar_close) FILTER (WHERE kind = 1))
                 / max(bar_close) FILTER (WHERE kind = 1), 8),
           max(bar_regime) FILTER (WHERE kind = 1)
    FROM as_of
    WHERE kind > 0 AND at - bar_at <= $5::interval
    GROUP BY prediction_id, predicted_at, horizon_end, symbol
    HAVING count(*) = 2
),
outcomes AS MATERIALIZED (
    SELECT p.prediction_id, p.predicted_at, p.actual_return,
           CASE WHEN p.actual_return > $6::numeric THEN 'LONG'
                WHEN p.actual_return < -$6::numeric THEN 'SHORT'
                ELSE 'NEUTRAL' END AS actual_direction,
           coalesce(p.start_regime, 'none') AS start_regime,  -- the start bar's (schema/24)
           abs(p.actual_return) < 1e10 AS fits
    FROM priced AS p
    JOIN latest_bars AS l ON l.symbol = p.symbol AND l.timestamp >= p.horizon_end
),
written AS (
    UPDATE model_predictions AS p
    SET actual_return = o.actual_return,
        actual_direction = o.actual_direction,
        prediction_accuracy = (p.predicted_direction = o.actual_direction),
        start_regime = o.start_regime,
        validated_at = now()
    FROM outcomes AS o
    WHERE o.fits AND p.prediction_id = o.prediction_id AND p.predicted_at = o.predicted_at
      -- scalar bounds on the table itself: TimescaleDB decompresses only the batches they select
      AND p.predicted_at BETWEEN $7::timestamptz AND $9::timestamptz
      -- only rows whose outcome (or start bar's regime) changes
      AND (p.validated_at IS NULL
           OR (p.actual_return, p.actual_direction, p.start_regime)
              IS DISTINCT FROM (o.actual_return, o.actual_direction, o.start_regime))
    RETURNING p.model_version, p.predicted_at,
              extract(epoch FROM p.validated_at
                      - (p.predicted_at + make_interval(mins => p.prediction_horizon_minutes))
                     )::float8 AS lag_seconds
),
marked AS (
    INSERT INTO rollup_pending (kind, model_version, day, quarter)  -- as schema/29's trigger
    SELECT DISTINCT 'prediction', model_version, (predicted_at AT TIME ZONE 'UTC')::date,
           date_bin('15 minutes', predicted_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')
    FROM written
)
SELECT ARRAY(SELECT lag_seconds FROM written) AS lags,
       ARRAY(SELECT prediction_id FROM outcomes WHERE NOT fits) AS skipped_ids,
       ARRAY(SELECT actual_return FROM outcomes WHERE NOT fits) AS skipped_returns;

-- name: trades_near_bars
-- Trades of the given symbols open at some time in the given ranges ($1 symbols, $2 earliest,
-- $3 latest bar time).
SELECT o.trade_id
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS r(symbol, first_bar, last_bar)
JOIN trade_outcomes AS o
  ON o.symbol = r.symbol AND o.entry_time <= r.last_bar
 AND (o.exit_time IS NULL OR o.exit_time >= r.first_bar);

-- name: trades_to_sweep
-- Open trades, and trades entered since $1 whose excursions were never computed. By symbol:
-- each of the sweep's transactions locks the symbols of its trades, the fewer the better.
SELECT symbol, trade_id FROM trade_outcomes WHERE exit_time IS NULL
UNION
SELECT symbol, trade_id FROM trade_outcomes
WHERE entry_time >= $1 AND max_favorable_excursion IS NULL
ORDER BY symbol, trade_id;

-- name: excursions
-- $1: trade ids. Bars from entry_time to exit_time (to now while open), both inclusive.
-- LONG: favourable = (max high - entry price) x quantity, adverse = (entry price - min low)
-- x quantity; SHORT the mirror image. Both are amounts of money >= 0, rounded to 4 places.
-- Written by write_excursions, a second statement: this one reads trade_outcomes, and an UPDATE
-- joined to a CTE that read the same compressed chunk updated nothing (see validate_predictions).
WITH trades AS (
    SELECT trade_id, entry_time, symbol, exit_time, direction, entry_price, quantity
    FROM trade_outcomes
    WHERE trade_id = ANY($1::uuid[])
),
extremes AS (
    SELECT t.trade_id, t.entry_time, max(m.high) AS highest, min(m.low) AS lowest
    FROM trades AS t
    JOIN market_conditions AS m
      ON m.symbol = t.symbol AND m.timestamp >= t.entry_time
     AND (t.exit_time IS NULL OR m.timestamp <= t.exit_time)
    GROUP BY t.trade_id, t.entry_time
)
SELECT t.trade_id, t.entry_time, t.exit_time, t.direction, t.entry_price, t.quantity,
       round(greatest(0, CASE WHEN t.direction = 'LONG' THEN x.highest - t.entry_price
                              ELSE t.entry_price - x.lowest END) * t.quantity, 4) AS favorable,
       round(greatest(0, CASE WHEN t.direction = 'LONG' THEN t.entry_price - x.lowest
                              ELSE x.highest - t.entry_price END) * t.quantity, 4) AS adverse
FROM extremes AS x
JOIN trades AS t USING (trade_id, entry_time);

-- name: write_excursions
-- $1..$4: keys and excursions (from excursions, each fitting DECIMAL(18, 4)); $5, $6: the
-- earliest and latest entry_time among them; $7..$10: the trade as excursions read it. A
-- trade the fills consumer changed since (closed, re-keyed, grown) is left alone: its fill
-- brings the validator back to it. Returns the ids of the trades it changed.
UPDATE trade_outcomes AS o
SET max_favorable_excursion = e.favorable,
    max_adverse_excursion = e.adverse,
    duration_seconds = COALESCE(o.duration_seconds,
                                extract(epoch FROM o.exit_time - o.entry_time)::integer)
FROM unnest($1::uuid[], $2::timestamptz[], $3::numeric[], $4::numeric[],
            $7::timestamptz[], $8::text[], $9::numeric[], $10::integer[])
     AS e(trade_id, entry_time, favorable, adverse, exit_time, direction, entry_price, quantity)
WHERE o.trade_id = e.trade_id AND o.entry_time = e.entry_time
  AND o.entry_time BETWEEN $5::timestamptz AND $6::timestamptz  -- as in write_prediction_outcomes
  AND (o.exit_time, o.direction, o.entry_price, o.quantity)
      IS NOT DISTINCT FROM (e.exit_time, e.direction, e.entry_price, e.quantity)
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
