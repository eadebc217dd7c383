-- 15: cold storage. `cie archive` (consumers/archive/) exports trade_outcomes and trade_fills
-- months past the archive horizon to Parquet in S3, one or more parts per month, and records
-- each part here once it has been read back from S3 and verified. Retention may then remove
-- those rows, and only those: `cie maintain` on plain PostgreSQL, the job of migration 16 on
-- TimescaleDB. Additions to the seed.

-- One verified Parquet object: a month's rows (part 0), or rows that arrived in that month
-- after it was archived (part 1, 2, ...). The object's own manifest (object_key + .json)
-- holds the same facts.
CREATE TABLE archive_parts (
    table_name TEXT NOT NULL,
    month DATE NOT NULL CONSTRAINT archive_parts_month_first_day
        CHECK (extract(day FROM month) = 1),
    part INTEGER NOT NULL CONSTRAINT archive_parts_part_not_negative CHECK (part >= 0),
    object_key TEXT NOT NULL,
    row_count BIGINT NOT NULL CONSTRAINT archive_parts_rows_positive CHECK (row_count > 0),
    min_time TIMESTAMPTZ NOT NULL,
    max_time TIMESTAMPTZ NOT NULL,
    net_pnl_sum NUMERIC,  -- trade_outcomes: what a reader can check a restore against
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    verified_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT archive_parts_pkey PRIMARY KEY (table_name, month, part)
);

-- What retention removes at once: a chunk's share of a month on TimescaleDB, a whole month on
-- plain PostgreSQL. A slice's rows may be removed when the table holds exactly the rows
-- archived and not yet removed: count(rows in the slice) = archived_rows - removed_rows. A
-- late row makes the counts differ until `cie archive` has written it to a new part.
CREATE TABLE archive_slices (
    table_name TEXT NOT NULL,
    slice_start TIMESTAMPTZ NOT NULL,
    slice_end TIMESTAMPTZ NOT NULL,
    archived_rows BIGINT NOT NULL DEFAULT 0,
    removed_rows BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT archive_slices_pkey PRIMARY KEY (table_name, slice_start),
    CONSTRAINT archive_slices_ordered CHECK (slice_end > slice_start),
    CONSTRAINT archive_slices_removed_archived CHECK (removed_rows <= archived_rows)
);

-- The archiver's own role: it reads the trades and records what it archived, nothing else.
DO $$
BEGIN
    CREATE ROLE cie_archiver NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cie_archiver;
GRANT SELECT ON trade_outcomes, trade_fills, retention_rules TO cie_archiver;
GRANT SELECT, INSERT, UPDATE ON archive_parts, archive_slices TO cie_archiver;
GRANT SELECT ON schema_migrations, command_runs TO cie_archiver;  -- start check, /metrics
GRANT INSERT, UPDATE ON command_runs TO cie_archiver;  -- its last success, for the alert
GRANT SELECT ON archive_parts, archive_slices TO cie_analytics;
-- the long-running consumers export what is archived (cie_archived_rows, _bytes)
GRANT SELECT ON archive_parts TO cie_ingest;
