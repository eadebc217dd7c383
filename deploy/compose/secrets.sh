#!/bin/sh
# docker-compose's `secrets` service: one random password per login, made once into the
# `cie-secrets` volume (mode 0600 files, nothing in the repository); every other service reads
# its own from there (the image's POSTGRES_PASSWORD_FILE, our DATABASE_PASSWORD_FILE, Grafana's
# GF_SECURITY_ADMIN_PASSWORD__FILE).
set -eu
umask 077
for login in postgres ingest validator scheduler notifier grafana; do
  [ -s "/secrets/$login" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"/secrets/$login"
done
# the containers run as different users (postgres 999, ours 10001, grafana 472): each file
# belongs to the one that reads it
chown 999 /secrets/postgres
chown 10001 /secrets/ingest /secrets/validator /secrets/scheduler /secrets/notifier
chown 472 /secrets/grafana
