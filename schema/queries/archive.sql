-- Named queries of `cie archive` (consumers/archive/). {table}, {time}, {key} and {columns}
-- are identifiers of the archived tables, quoted by the code from its own constants (never
-- message content).

-- name: rule
SELECT keep_for, time_column FROM retention_rules WHERE table_name = $1;

-- name: due_months
-- The UTC months that ended before now - $1 (the archive horizon) and still hold rows of
-- table $2, or whose archive still holds rows the table has not removed (they may have moved
-- to another month: the archive must say so with an empty part).
SELECT DISTINCT (date_trunc('month', {time} AT TIME ZONE 'UTC'))::date AS month
FROM {table}
WHERE {time} < date_trunc('month', (now() - $1::interval) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
UNION
SELECT (date_trunc('month', slice_start AT TIME ZONE 'UTC'))::date
FROM archive_slices
WHERE table_name = $2 AND live_rows > 0
  AND slice_end <= date_trunc('month', (now() - $1::interval) AT TIME ZONE 'UTC')
                   AT TIME ZONE 'UTC'
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

-- name: month_slices_recorded
-- Slices of table $1 in [$2, $3) whose archive holds rows not removed yet.
SELECT slice_start, slice_end FROM archive_slices
WHERE table_name = $1 AND slice_start >= $2 AND slice_start < $3 AND live_rows > 0;

-- name: slice_content
-- The rows of table $1 (time column $2) in [$3, $4): their count and checksum (migration 20).
SELECT row_count, checksum FROM cie_slice_content($1::text::regclass, $2, $3, $4);

-- name: slice_state
SELECT live_rows, live_checksum, epoch FROM archive_slices
WHERE table_name = $1 AND slice_start = $2;

-- name: lock_slice
-- Before a part is recorded: the slice's epoch, held until the transaction ends (retention
-- takes the same row lock before it removes the slice).
SELECT epoch FROM archive_slices WHERE table_name = $1 AND slice_start = $2 FOR UPDATE;

-- name: next_part
SELECT coalesce(max(part), -1) + 1 FROM archive_parts WHERE table_name = $1 AND month = $2;

-- name: month_parts
SELECT part, object_key FROM archive_parts WHERE table_name = $1 AND month = $2 ORDER BY part;

-- name: slice_rows_ordered
-- A slice's rows in a fixed order (a part written again is the same file).
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
-- A part written and read back, its manifest still to go up ($15 NULL); or one found in S3
-- with its manifest, checked, that this database did not know (adopted: $15 now).
INSERT INTO archive_parts (table_name, month, part, object_key, row_count, min_time, max_time,
                           net_pnl_sum, bytes, sha256, verified_at, slice_start, slice_end,
                           epoch, checksum, manifest_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11, $12, $13, $14, $15);

-- name: record_slice
-- What S3 now holds for the slice's current epoch: exactly the rows just archived.
INSERT INTO archive_slices (table_name, slice_start, slice_end, live_rows, live_checksum, epoch)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (table_name, slice_start) DO UPDATE
SET live_rows = EXCLUDED.live_rows, live_checksum = EXCLUDED.live_checksum;

-- name: part_by_key
SELECT * FROM archive_parts WHERE object_key = $1;

-- name: part_sha256
SELECT sha256 FROM archive_parts WHERE object_key = $1;

-- name: manifest_written
UPDATE archive_parts SET manifest_at = now() WHERE object_key = $1;

-- name: parts_without_manifest
-- Recorded parts whose manifest a run that died never wrote.
SELECT object_key FROM archive_parts WHERE manifest_at IS NULL ORDER BY table_name, month, part;

-- name: record_bucket
INSERT INTO archive_buckets (location, versioning, checked_at) VALUES ($1, $2, now())
ON CONFLICT (location) DO UPDATE
SET versioning = EXCLUDED.versioning, checked_at = EXCLUDED.checked_at;

-- name: status
-- `cie archive --status`: each archived month, with its current parts' rows and bytes.
SELECT table_name, month, count(*) AS parts, sum(row_count) AS rows, sum(bytes) AS bytes,
       sum(net_pnl_sum) AS net_pnl, max(verified_at) AS verified_at
FROM archive_parts_current GROUP BY table_name, month ORDER BY table_name, month;

-- name: rows_past_retention
-- `cie archive --status`: rows past retention still in the table (archived ones go with
-- retention's next run; the others wait for `cie archive`).
SELECT count(*) FROM {table} WHERE {time} < now() - $1::interval;
