-- Run in every database of a PostgreSQL 15 cluster (as a superuser) just before pg_upgrade to
-- PostgreSQL 18 (deploy/README.md, "Upgrading the database platform"; bench/upgrade_drill.py
-- runs it). Debian's PostgreSQL 15.20 stores an attribute option `pg_attver=<n>` on every
-- column it creates; no other release knows that option, pg_upgrade carries every column's
-- options over, and PostgreSQL 18 refuses it (`unrecognized parameter "pg_attver"`), so the
-- upgrade of any database with a table fails. This removes that one option and keeps the rest.
-- Check first: SELECT count(*) FROM pg_attribute WHERE attoptions::text LIKE '%pg_attver=%';
UPDATE pg_catalog.pg_attribute AS a
SET attoptions = (SELECT CASE WHEN count(*) > 0 THEN array_agg(option ORDER BY n) END
                  FROM unnest(a.attoptions) WITH ORDINALITY AS o(option, n)
                  WHERE option NOT LIKE 'pg\_attver=%')
WHERE a.attoptions::text LIKE '%pg\_attver=%'
  AND a.attrelid IN (SELECT oid FROM pg_catalog.pg_class
                     WHERE relnamespace NOT IN ('pg_catalog'::regnamespace,
                                                'information_schema'::regnamespace));
