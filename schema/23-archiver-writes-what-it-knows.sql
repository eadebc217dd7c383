-- 23: cie_archiver records what S3 holds, and only that. Until now it could UPDATE every
-- column of archive_parts and archive_slices, the records retention trusts before it removes
-- rows: the archiver's login could rewrite a part's row count or checksum, or a slice's epoch
-- and removed rows. It keeps INSERT (recording a new part or slice is its job) and may now
-- update only the columns its statements set (schema/queries/archive.sql): a part's
-- manifest_at, a slice's live_rows and live_checksum (record_slice's upsert; its SELECT ...
-- FOR UPDATE needs UPDATE on one column), a bucket's versioning check.
REVOKE UPDATE ON archive_parts, archive_slices, archive_buckets FROM cie_archiver;
GRANT UPDATE (manifest_at) ON archive_parts TO cie_archiver;
GRANT UPDATE (live_rows, live_checksum) ON archive_slices TO cie_archiver;
GRANT UPDATE (versioning, checked_at) ON archive_buckets TO cie_archiver;
