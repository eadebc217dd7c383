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
-- history load, a new symbol universe) was dropped before any refresh saw it. Now a job
-- summarises each expiring chunk's (symbol, day) pairs itself and then drops the chunk. It
-- does not refresh the continuous aggregate there: a refresh recomputes whole days for every
-- symbol, and would replace the summary of a day whose bars were dropped long ago with one of
-- the few bars that arrived late (or delete it, for a symbol with none). Instead, per (symbol,
-- day): no summary yet, or one of no more bars than are here, is (re)computed; a summary of
-- more bars than are here (a late bar for a day already dropped) stays the record. The same
-- rule as `cie maintain` on plain PostgreSQL (refresh_summary_days). The pairs are written to
-- the aggregate's materialization hypertable, outside the policy's refresh window (which ends
-- where raw retention begins), so the policy never recomputes them.

CREATE OR REPLACE FUNCTION cie_drop_archived_chunk(tbl TEXT, chunk TEXT,
                                                   chunk_start TIMESTAMPTZ,
                                                   chunk_end TIMESTAMPTZ)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    time_column TEXT := (SELECT r.time_column FROM retention_rules AS r WHERE r.table_name = tbl);
    slice RECORD;
    content RECORD;
BEGIN
    -- one drop at a time (the scheduler's run and `cie maintain`'s may meet); a chunk another
    -- run dropped meanwhile is done
    PERFORM pg_advisory_xact_lock(hashtextextended('cie_drop_archived_chunk', 0));
    IF to_regclass(chunk::text) IS NULL THEN
        RETURN false;
    END IF;
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
        PERFORM cie_drop_archived_chunk(due.table_name, due.chunk, due.range_start,
                                        due.range_end);
        COMMIT;  -- the chunk's lock is held only while it is checked and dropped
    END LOOP;
END
$$;

DROP FUNCTION cie_archive_release(TEXT, TIMESTAMPTZ, TIMESTAMPTZ);

-- The (symbol, day) pairs of raw bars in [s, e) written to the summary where it holds none,
-- or one of no more bars than are here; the others keep the summary they have.
CREATE FUNCTION cie_summarise_expiring_bars(s TIMESTAMPTZ, e TIMESTAMPTZ) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    summary REGCLASS := (
        SELECT format('%I.%I', materialization_hypertable_schema,
                      materialization_hypertable_name)::regclass
        FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = current_schema() AND view_name = 'market_daily_summary');
BEGIN
    -- one run at a time: two would both find a pair unsummarised and write it twice
    PERFORM pg_advisory_xact_lock(hashtextextended('cie_summarise_expiring_bars', 0));
    EXECUTE format($sql$
        DELETE FROM %s AS m
        WHERE m.day >= $1 AND m.day < $2
          AND m.bar_count <= (SELECT count(*) FROM market_conditions AS r
                              WHERE r.symbol = m.symbol AND r.timestamp >= m.day
                                AND r.timestamp < m.day + INTERVAL '1 day')
          AND EXISTS (SELECT 1 FROM market_conditions AS r
                      WHERE r.symbol = m.symbol AND r.timestamp >= m.day
                        AND r.timestamp < m.day + INTERVAL '1 day')$sql$, summary)
        USING s, e;
    -- the continuous aggregate's own definition (06), for the pairs without a summary now
    EXECUTE format($sql$
        INSERT INTO %1$s
        SELECT * FROM (
            SELECT symbol, time_bucket(INTERVAL '1 day', timestamp) AS day,
                   first(open, timestamp), max(high), min(low), last(close, timestamp),
                   sum(volume), count(*), avg(atr_14), avg(rsi_14), avg(volatility_20d),
                   avg(vix), avg(regime_confidence),
                   mode() WITHIN GROUP (ORDER BY detected_regime)
            FROM market_conditions
            WHERE timestamp >= $1 AND timestamp < $2
            GROUP BY symbol, time_bucket(INTERVAL '1 day', timestamp)) AS computed
        WHERE NOT EXISTS (SELECT 1 FROM %1$s AS m
                          WHERE m.symbol = computed.symbol AND m.day = computed.day)$sql$,
        summary)
        USING s, e;
END
$$;

-- Each raw chunk past retention: its days summarised, then dropped.
CREATE PROCEDURE cie_drop_summarised_bars(job_id INTEGER, config JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    keep_raw INTERVAL := (SELECT keep_for FROM retention_rules
                          WHERE table_name = 'market_conditions');
    chunk RECORD;
BEGIN
    FOR chunk IN
        SELECT range_start, range_end FROM timescaledb_information.chunks
        WHERE hypertable_schema = current_schema() AND hypertable_name = 'market_conditions'
          AND range_end <= now() - keep_raw
        ORDER BY range_start
    LOOP
        PERFORM cie_summarise_expiring_bars(chunk.range_start, chunk.range_end);
        PERFORM drop_chunks('market_conditions', older_than => chunk.range_end,
                            newer_than => chunk.range_start);
        COMMIT;  -- a chunk at a time
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
