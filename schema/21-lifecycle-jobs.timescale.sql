-- cie: requires timescaledb
-- 21: TimescaleDB's side of 20, and raw bars summarised before they go, whatever their age.
--
-- Archived chunks: a chunk of trade_outcomes or trade_fills past retention is locked (ACCESS
-- EXCLUSIVE: no write reaches it until the transaction ends), its slices' content compared
-- with what S3 holds (archive_slices: count and checksum), and only then dropped, in the same
-- transaction. Until 21 the count was taken first and the chunk dropped in a later statement,
-- so a row written in between went without ever being archived.
--
-- Raw bars: 10 dropped market_conditions chunks with a plain retention policy one day after
-- they left the summary's refresh window, so a bar loaded older than the raw retention (a
-- history load) was dropped before any refresh saw it. Now a job refreshes the summary over
-- each chunk's own range and then drops that chunk. The chunks are whole UTC days (02), as
-- are the summary's buckets, so a refresh never recomputes a day from part of its bars.

CREATE OR REPLACE FUNCTION cie_drop_archived_chunk(tbl TEXT, chunk REGCLASS,
                                                   chunk_start TIMESTAMPTZ,
                                                   chunk_end TIMESTAMPTZ)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    time_column TEXT := (SELECT r.time_column FROM retention_rules AS r WHERE r.table_name = tbl);
    slice RECORD;
    content RECORD;
BEGIN
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', chunk);
    FOR slice IN SELECT * FROM cie_month_slices(chunk_start, chunk_end) LOOP
        SELECT * INTO content
        FROM cie_slice_content(format('%I', tbl)::regclass, time_column, slice.s, slice.e);
        IF content.row_count > 0 AND NOT EXISTS (
            SELECT 1 FROM archive_slices AS a
            WHERE a.table_name = tbl AND a.slice_start = slice.s AND a.slice_end = slice.e
              AND a.live_rows = content.row_count AND a.live_checksum = content.checksum
        ) THEN
            RETURN false;  -- archived first (cie archive), dropped by a later run
        END IF;
    END LOOP;
    PERFORM drop_chunks(format('%I', tbl)::regclass, older_than => chunk_end,
                        newer_than => chunk_start);
    UPDATE archive_slices AS a
    SET removed_rows = a.removed_rows + a.live_rows, live_rows = 0, live_checksum = 0,
        epoch = a.epoch + 1
    FROM cie_month_slices(chunk_start, chunk_end) AS m
    WHERE a.table_name = tbl AND a.slice_start = m.s AND a.slice_end = m.e AND a.live_rows > 0;
    RETURN true;
END
$$;

CREATE OR REPLACE PROCEDURE cie_drop_archived_chunks(job_id INTEGER, config JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    due RECORD;
BEGIN
    -- read before the loop: each chunk is dropped in a transaction of its own
    FOR due IN
        SELECT r.table_name, format('%I.%I', c.chunk_schema, c.chunk_name) AS chunk,
               c.range_start, c.range_end
        FROM retention_rules AS r
        JOIN timescaledb_information.chunks AS c
          ON c.hypertable_schema = current_schema() AND c.hypertable_name = r.table_name
        WHERE r.table_name IN ('trade_outcomes', 'trade_fills')
          AND c.range_end <= now() - r.keep_for
        ORDER BY r.table_name, c.range_start
    LOOP
        PERFORM cie_drop_archived_chunk(due.table_name, due.chunk::regclass, due.range_start,
                                        due.range_end);
        COMMIT;  -- the chunk's lock is held only while it is checked and dropped
    END LOOP;
END
$$;

DROP FUNCTION cie_archive_release(TEXT, TIMESTAMPTZ, TIMESTAMPTZ);

-- Each raw chunk past retention: its days summarised, then dropped.
CREATE PROCEDURE cie_drop_summarised_bars(job_id INTEGER, config JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    keep_raw INTERVAL := (SELECT keep_for FROM retention_rules
                          WHERE table_name = 'market_conditions');
    ranges TSTZRANGE[];
    chunk TSTZRANGE;
BEGIN
    -- collected first: refresh_continuous_aggregate commits, so no query may stay open
    SELECT coalesce(array_agg(tstzrange(range_start, range_end) ORDER BY range_start), '{}')
    INTO ranges
    FROM timescaledb_information.chunks
    WHERE hypertable_schema = current_schema() AND hypertable_name = 'market_conditions'
      AND range_end <= now() - keep_raw;
    FOREACH chunk IN ARRAY ranges LOOP
        CALL refresh_continuous_aggregate('market_daily_summary', lower(chunk), upper(chunk));
        PERFORM drop_chunks('market_conditions', older_than => upper(chunk),
                            newer_than => lower(chunk));
        COMMIT;
    END LOOP;
END
$$;

-- The summary's hourly refresh keeps its window (10); the raw bars' retention is the job.
CREATE OR REPLACE FUNCTION cie_schedule_market_data_jobs() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    keep_raw interval := (SELECT keep_for FROM retention_rules
                          WHERE table_name = 'market_conditions');
BEGIN
    PERFORM remove_continuous_aggregate_policy('market_daily_summary', if_exists => true);
    PERFORM add_continuous_aggregate_policy('market_daily_summary',
        start_offset => keep_raw,
        end_offset => INTERVAL '1 hour',
        schedule_interval => INTERVAL '1 hour');
    PERFORM remove_retention_policy('market_conditions', if_exists => true);
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs
                   WHERE proc_name = 'cie_drop_summarised_bars') THEN
        PERFORM add_job('cie_drop_summarised_bars', INTERVAL '1 hour');
    END IF;
END
$$;

SELECT cie_schedule_market_data_jobs();

-- What `cie maintain` did with each job it ran in the foreground (consumers/platform/
-- maintenance.py): its last run, and the error when it failed. The consumers export it.
CREATE TABLE maintenance_job_runs (
    job_id INTEGER PRIMARY KEY,
    proc_name TEXT NOT NULL,
    relation TEXT NOT NULL,
    ran_at TIMESTAMPTZ NOT NULL,
    succeeded BOOLEAN NOT NULL,
    error TEXT
);
GRANT SELECT ON maintenance_job_runs TO cie_ingest, cie_analytics;
