-- cie: requires timescaledb
-- 16: trade_outcomes and trade_fills chunks are dropped only once archived. Until 15 a plain
-- retention policy dropped them at 5 years, archived or not. Now a job drops a chunk past
-- retention only when every month it covers holds exactly the rows `cie archive` verified in
-- S3 (archive_slices: rows in the chunk's share of the month = archived - removed); a chunk
-- that is not archived stays, and `cie archive --status` and the CieArchiveBehindRetention
-- alert say so. The same rule as `cie maintain` on plain PostgreSQL.

-- [range_start, range_end) cut at UTC month boundaries: a chunk's slices, as
-- consumers/archive/archiver.py cuts a month at chunk boundaries.
CREATE FUNCTION cie_month_slices(range_start TIMESTAMPTZ, range_end TIMESTAMPTZ)
RETURNS TABLE (s TIMESTAMPTZ, e TIMESTAMPTZ)
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(month_utc AT TIME ZONE 'UTC', range_start),
           least((month_utc + INTERVAL '1 month') AT TIME ZONE 'UTC', range_end)
    FROM generate_series(date_trunc('month', range_start AT TIME ZONE 'UTC'),
                         date_trunc('month', (range_end - INTERVAL '1 microsecond')
                                    AT TIME ZONE 'UTC'),
                         INTERVAL '1 month') AS months(month_utc)
$$;

-- The chunk's rows per month (its slices), in the same transaction as the drop: $1 the
-- hypertable, [$2, $3) the chunk's range. True when every slice is archived, with the
-- removed counts recorded; false (and nothing recorded) otherwise.
CREATE FUNCTION cie_archive_release(tbl TEXT, chunk_start TIMESTAMPTZ, chunk_end TIMESTAMPTZ)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    time_column TEXT := (SELECT time_column FROM retention_rules WHERE table_name = tbl);
    slice RECORD;
    live BIGINT;
    ok BOOLEAN := true;
BEGIN
    FOR slice IN
        SELECT * FROM cie_month_slices(chunk_start, chunk_end)
    LOOP
        EXECUTE format('SELECT count(*) FROM %I WHERE %I >= $1 AND %I < $2',
                       tbl, time_column, time_column)
            INTO live USING slice.s, slice.e;
        IF live > 0 AND NOT EXISTS (
            SELECT 1 FROM archive_slices AS a
            WHERE a.table_name = tbl AND a.slice_start = slice.s AND a.slice_end = slice.e
              AND a.archived_rows - a.removed_rows = live
        ) THEN
            ok := false;
        END IF;
    END LOOP;
    IF NOT ok THEN
        RETURN false;
    END IF;
    FOR slice IN
        SELECT * FROM cie_month_slices(chunk_start, chunk_end)
    LOOP
        UPDATE archive_slices SET removed_rows = archived_rows
        WHERE table_name = tbl AND slice_start = slice.s AND slice_end = slice.e;
    END LOOP;
    RETURN true;
END
$$;

-- The job: each archived chunk past retention of trade_outcomes and trade_fills, dropped.
CREATE PROCEDURE cie_drop_archived_chunks(job_id INTEGER, config JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    rule RECORD;
    chunk RECORD;
BEGIN
    FOR rule IN SELECT table_name, keep_for FROM retention_rules
                WHERE table_name IN ('trade_outcomes', 'trade_fills') LOOP
        FOR chunk IN
            SELECT c.range_start, c.range_end
            FROM timescaledb_information.chunks AS c
            WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = rule.table_name
              AND c.range_end <= now() - rule.keep_for
            ORDER BY c.range_start
        LOOP
            IF cie_archive_release(rule.table_name, chunk.range_start, chunk.range_end) THEN
                PERFORM drop_chunks(format('%I', rule.table_name)::regclass,
                                    older_than => chunk.range_end,
                                    newer_than => chunk.range_start);
            END IF;
        END LOOP;
        COMMIT;  -- a table at a time
    END LOOP;
END
$$;

SELECT remove_retention_policy('trade_outcomes', if_exists => true);
SELECT remove_retention_policy('trade_fills', if_exists => true);
SELECT add_job('cie_drop_archived_chunks', INTERVAL '1 day');
