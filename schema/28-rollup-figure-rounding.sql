-- 28: how the rollup fits a figure to its column, on the server (strategy_periods in
-- schema/queries/rollup.sql computes strategy_performance set-based), by the rules of
-- consumers/analytics/performance.py, which defines every figure:
-- - round_half_even: to `scale` decimals, a tie to the even digit (Python's ROUND_HALF_EVEN;
--   PostgreSQL's round() takes a tie away from zero: 0.03125 -> 0.0313, not 0.0312). Only a
--   value with exactly scale + 1 decimals, its trailing zeros cut, can be a tie, so the
--   common case costs one round() and one scale() (the first version, which tested every
--   value for a tie, cost 4.8 us a call against round()'s 0.9);
-- - fitted: rounded as above, or NULL when that does not fit DECIMAL(digits, scale). A value
--   whose half-away rounding fits has a half-even rounding that fits.
-- Neither is STRICT, and NULL gives NULL anyway: PostgreSQL inlines a SQL function into the
-- query only if it is not STRICT or its body is (a CASE is not), and a call that is not
-- inlined cost 8 us instead of 1.
CREATE FUNCTION round_half_even(value NUMERIC, scale INTEGER) RETURNS NUMERIC
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN scale(trim_scale(value)) <> scale + 1 THEN round(value, scale)
    WHEN abs(value - trunc(value, scale)) * power(10::numeric, scale + 1) = 5
         AND mod(trunc(value, scale) * power(10::numeric, scale), 2) = 0
        THEN trunc(value, scale)
    ELSE round(value, scale)
END;

CREATE FUNCTION fitted(value NUMERIC, digits INTEGER, scale INTEGER) RETURNS NUMERIC
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN abs(round(value, scale)) < power(10::numeric, digits - scale)
        THEN round_half_even(value, scale)
END;
