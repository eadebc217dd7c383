-- Named queries of `cie archive` (consumers/archive/). {table}, {time}, {key} and {columns}
-- are identifiers of the archived tables, quoted by the code from its own constants (never
-- message content).

-- name: rule
SELECT keep_for, time_column FROM retention_rules WHERE table_name = $1;

-- name: due_months
-- The UTC months that ended before now - $1 (the archive horizon) and still hold rows.
SELECT DISTINCT (date_trunc('month', {time} AT TIME ZONE 'UTC'))::date AS month
FROM {table}
WHERE {time} < date_trunc('month', (now() - $1::interval) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
ORDER BY month;

-- name: timescaledb_here
SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL;

-- name: is_hypertable
-- Only where timescaledb_here (the view does not exist on plain PostgreSQL).
SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = current_schema() AND hypertable_name = $1);

-- name: month_chunks
-- The month [$2, $3)'s share of each chunk of hypertable $1.
SELECT greatest(range_start, $2) AS slice_start, least(range_end, $3) AS slice_end
FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema() AND hypertable_name = $1
  AND range_start < $3 AND range_end > $2
ORDER BY slice_start;

-- name: slice_rows
SELECT count(*) FROM {table} WHERE {time} >= $1 AND {time} < $2;

-- name: slice_state
SELECT archived_rows, removed_rows FROM archive_slices
WHERE table_name = $1 AND slice_start = $2;

-- name: month_parts
SELECT part, object_key FROM archive_parts WHERE table_name = $1 AND month = $2 ORDER BY part;

-- name: month_rows
-- A month's rows in a fixed order (a part written again is the same file).
SELECT {columns} FROM {table} WHERE {time} >= $1 AND {time} < $2 ORDER BY {time}, {key};

-- name: table_columns
-- The table's columns in order, with NUMERIC precision and scale, for the Parquet schema.
SELECT a.attname AS name,
       format_type(a.atttypid, NULL) AS base_type,
       CASE WHEN a.atttypid = 'numeric'::regtype AND a.atttypmod > 0
            THEN ((a.atttypmod - 4) >> 16) & 65535 END AS precision,
       CASE WHEN a.atttypid = 'numeric'::regtype AND a.atttypmod > 0
            THEN (a.atttypmod - 4) & 65535 END AS scale
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: record_part
INSERT INTO archive_parts (table_name, month, part, object_key, row_count, min_time, max_time,
                           net_pnl_sum, bytes, sha256, verified_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now());

-- name: add_to_slice
INSERT INTO archive_slices (table_name, slice_start, slice_end, archived_rows)
VALUES ($1, $2, $3, $4)
ON CONFLICT (table_name, slice_start) DO UPDATE
SET archived_rows = archive_slices.archived_rows + EXCLUDED.archived_rows;

-- name: status
-- `cie archive --status`: each archived month, with its parts' rows and bytes.
SELECT table_name, month, count(*) AS parts, sum(row_count) AS rows, sum(bytes) AS bytes,
       sum(net_pnl_sum) AS net_pnl, max(verified_at) AS verified_at
FROM archive_parts GROUP BY table_name, month ORDER BY table_name, month;

-- name: rows_past_retention
-- `cie archive --status`: rows past retention still in the table (archived ones go with
-- retention's next run; the others wait for `cie archive`).
SELECT count(*) FROM {table} WHERE {time} < now() - $1::interval;
