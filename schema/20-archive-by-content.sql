-- 20: retention removes archived rows by their content, not their count. Until now a slice
-- could go when it held as many rows as were archived; a row changed in place after its
-- month was archived (the fills upsert, the validator's excursions, a late fill re-keying a
-- trade, a replayed dead letter) kept the count, so its old version was all S3 ever held.
-- Now each slice records the count *and* an order-free checksum of the rows S3 holds for it
-- (the sum of each row's 64-bit hash, cie_slice_content), the archiver writes a slice again
-- whenever either differs, and removal compares both with what it removes, in the same
-- statement (plain PostgreSQL) or under the chunk's lock (TimescaleDB, migration 21).
--
-- Which part a reader reads (schema/README.md, consumers/archive/archiver.py): a part holds
-- every row of one slice as the table held it, for one *epoch* of that slice (the rows
-- written between two removals). For each (slice, epoch) the latest part is the current one;
-- where a key is in more than one current part (a row written again after its removal), the
-- latest part's row wins. Parts written before this migration have no slice: they stay
-- current, and their slices start again at epoch 1, so nothing newer replaces them.

ALTER TABLE archive_slices
    ADD COLUMN live_rows BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN live_checksum NUMERIC,
    ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;

-- What S3 held by count; the checksum is unknown (NULL never matches), so each slice with
-- rows is archived once more by content before retention may remove it.
UPDATE archive_slices
SET live_rows = archived_rows - removed_rows,
    live_checksum = CASE WHEN archived_rows = removed_rows THEN 0 END,
    epoch = 1;

ALTER TABLE archive_slices
    DROP CONSTRAINT archive_slices_removed_archived,
    DROP COLUMN archived_rows,
    ADD CONSTRAINT archive_slices_live_not_negative CHECK (live_rows >= 0),
    ADD CONSTRAINT archive_slices_removed_not_negative CHECK (removed_rows >= 0);

COMMENT ON COLUMN archive_slices.live_rows IS
    'rows of the current epoch that S3 holds (the slice''s latest part)';
COMMENT ON COLUMN archive_slices.live_checksum IS
    'cie_slice_content checksum of those rows; NULL: unknown, archive again';
COMMENT ON COLUMN archive_slices.epoch IS 'removals of this slice so far';

-- A part is one slice of one epoch. An empty part says the slice holds no rows any more (its
-- rows moved to another slice): it replaces the earlier ones like any other.
ALTER TABLE archive_parts
    ADD COLUMN slice_start TIMESTAMPTZ,
    ADD COLUMN slice_end TIMESTAMPTZ,
    ADD COLUMN epoch INTEGER,
    ADD COLUMN checksum NUMERIC,
    ADD COLUMN manifest_at TIMESTAMPTZ,
    DROP CONSTRAINT archive_parts_rows_positive,
    ADD CONSTRAINT archive_parts_rows_not_negative CHECK (row_count >= 0),
    ALTER COLUMN min_time DROP NOT NULL,
    ALTER COLUMN max_time DROP NOT NULL,
    ADD CONSTRAINT archive_parts_object_key_key UNIQUE (object_key),
    ADD CONSTRAINT archive_parts_slice_whole CHECK (
        (slice_start IS NULL) = (slice_end IS NULL) AND (slice_start IS NULL) = (epoch IS NULL)
        AND (slice_start IS NULL) = (checksum IS NULL));

-- The parts a reader reads: the latest of each (slice, epoch), and every part from before 20.
CREATE VIEW archive_parts_current AS
SELECT p.*
FROM archive_parts AS p
WHERE p.slice_start IS NULL OR NOT EXISTS (
    SELECT 1 FROM archive_parts AS q
    WHERE q.table_name = p.table_name AND q.month = p.month
      AND q.slice_start = p.slice_start AND q.epoch = p.epoch AND q.part > p.part);
GRANT SELECT ON archive_parts_current TO cie_archiver, cie_analytics, cie_ingest;

-- Before 20 the manifest went up before the part was recorded.
UPDATE archive_parts SET manifest_at = verified_at;

-- The rows of tbl with time_column in [s, e): how many, and the sum of their 64-bit hashes.
-- A row's text depends on the session's time zone and styles, so they are fixed here.
CREATE FUNCTION cie_slice_content(tbl regclass, time_column TEXT, s TIMESTAMPTZ,
                                  e TIMESTAMPTZ, OUT row_count BIGINT, OUT checksum NUMERIC)
LANGUAGE plpgsql STABLE
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
BEGIN
    EXECUTE format('SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) '
                   'FROM %s AS t WHERE %I >= $1 AND %I < $2', tbl, time_column, time_column)
        INTO row_count, checksum USING s, e;
END
$$;

-- Plain PostgreSQL: removes a slice's rows when they are exactly what S3 holds. One DELETE
-- removes them and sums what it removed; anything else than the recorded count and checksum
-- (a row changed or added since the archive, even while the DELETE waited for its lock) rolls
-- the DELETE back. Returns the rows removed, or NULL when the slice must be archived first.
CREATE FUNCTION cie_remove_archived_slice(tbl TEXT, s TIMESTAMPTZ, e TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE plpgsql
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
DECLARE
    time_column TEXT := (SELECT r.time_column FROM retention_rules AS r WHERE r.table_name = tbl);
    recorded archive_slices%ROWTYPE;
    removed BIGINT;
    removed_sum NUMERIC;
BEGIN
    SELECT * INTO recorded FROM archive_slices AS a
    WHERE a.table_name = tbl AND a.slice_start = s AND a.slice_end = e
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        EXECUTE format('WITH gone AS (DELETE FROM %I AS t WHERE %I >= $1 AND %I < $2 '
                       'RETURNING hashtextextended(t::text, 0) AS h) '
                       'SELECT count(*), coalesce(sum(h), 0) FROM gone',
                       tbl, time_column, time_column)
            INTO removed, removed_sum USING s, e;
        IF removed <> recorded.live_rows OR removed_sum IS DISTINCT FROM recorded.live_checksum
        THEN
            RAISE EXCEPTION USING ERRCODE = 'C1E01', MESSAGE = 'slice differs from its archive';
        END IF;
    EXCEPTION WHEN SQLSTATE 'C1E01' THEN
        RETURN NULL;  -- the DELETE is rolled back with this block
    END;
    IF removed > 0 THEN
        UPDATE archive_slices AS a
        SET removed_rows = a.removed_rows + removed, live_rows = 0, live_checksum = 0,
            epoch = a.epoch + 1
        WHERE a.table_name = tbl AND a.slice_start = s;
    END IF;
    RETURN removed;
END
$$;

-- The archive's bucket as `cie archive` last found it: without versioning (or object lock) a
-- delete or an overwrite of a verified part cannot be undone. The consumers export it.
CREATE TABLE archive_buckets (
    location TEXT PRIMARY KEY,  -- s3://bucket/prefix
    versioning TEXT NOT NULL,  -- Enabled, Suspended, Off (never turned on), Unknown (no right)
    checked_at TIMESTAMPTZ NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON archive_buckets TO cie_archiver;
GRANT SELECT ON archive_buckets TO cie_ingest, cie_analytics;
