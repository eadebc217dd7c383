-- Named queries of the health endpoints (consumers/platform/health.py).

-- name: ping
-- /readyz: the database answers.
SELECT 1;
