#!/bin/sh
# docker-compose's `logins` service, after `migrate` made the group roles (schema/07-roles.sql
# and on): one login per component, in the roles of its job only, the password from its
# secrets file, given to psql on its input (never as an argument: `ps` shows those).
set -eu
printf '*:*:*:postgres:%s\n' "$(cat /secrets/postgres)" >/tmp/pgpass
chmod 600 /tmp/pgpass
export PGPASSFILE=/tmp/pgpass
{
  for login in ingest validator scheduler notifier; do
    printf "\\set %s '%s'\n" "$login" "$(cat "/secrets/$login")"
  done
  cat <<'SQL'
SET password_encryption = 'scram-sha-256';
DO $$ BEGIN CREATE ROLE ingest LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE validator LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE scheduler LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE notifier LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE ingest PASSWORD :'ingest';
ALTER ROLE validator PASSWORD :'validator';
ALTER ROLE scheduler PASSWORD :'scheduler';
ALTER ROLE notifier PASSWORD :'notifier';
GRANT cie_ingest TO ingest;
GRANT cie_ingest, cie_rollup TO validator;
GRANT cie_scheduler TO scheduler;
GRANT cie_notifier TO notifier;
SQL
} | psql -X -q -v ON_ERROR_STOP=1 -h timescaledb -U postgres -d analytics
