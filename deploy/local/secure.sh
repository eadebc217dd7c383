#!/usr/bin/env bash
# The secured local stack's pieces: TLS and SCRAM for Kafka and PostgreSQL, users, ACLs and
# grants. `stack.sh up --secure` runs them on the stack's servers; the security tests run the
# same steps on servers of their own. Nothing here is committed output: certificates and
# passwords are made at start into DIR (git-ignored, mode 0700).
#
#   secure.sh certs DIR                 a private CA, server certificates for 127.0.0.1 and
#                                       localhost (kafka, postgres), a password per user
#   secure.sh certificate DIR NAME SAN  one more certificate from DIR's CA (tests: wrong host)
#   secure.sh kafka-format-args DIR     the SCRAM users for `kafka-storage format`: writes them
#                                       to DIR/kafka-scram.args (0600) and prints `@` and its
#                                       path, a Java argument file (a password on the command
#                                       line would be in every `ps`)
#   secure.sh kafka-config DIR          broker settings to append to server.properties
#   secure.sh kafka-client DIR USER     client properties for USER (for Kafka's own tools)
#   secure.sh kafka-acls BOOTSTRAP DIR  the ACLs: each user may do its job and nothing else
#   secure.sh postgres-users URL DIR    login users and the database `cie` (as a superuser)
#   secure.sh postgres-config DIR DATA  TLS on, and only scram-sha-256 over TLS from now on
#
# Users (Kafka SCRAM-SHA-512 and PostgreSQL scram-sha-256, one password each):
#   admin      Kafka only: the broker's own inter-broker user and the ACL administrator
#   owner      PostgreSQL `cie_owner`: owns the database, runs `cie migrate` and `cie maintain`
#   rollup     PostgreSQL only, in cie_rollup: `cie rollup` recomputes the figures, writes no fact
#   ingest     `cie consume`: reads the four source topics in its group, writes their DLQs
#              (in transactions: ids cie-ingest.dlq.*); PostgreSQL login in role cie_ingest
#   validator  `cie validate`: reads bars and fills in its own group; login in cie_ingest and
#              cie_rollup (it may also roll up: CIE_VALIDATOR_ROLLUP_SECONDS)
#   scheduler  `cie schedule`: writes optimization-tasks and improvement-events (the events it
#              decides); PostgreSQL login in role cie_scheduler
#   notifier   PostgreSQL only, in cie_notifier: `cie notify` records the notifications it posts
#   analyst    PostgreSQL only, in cie_analytics (dashboards, read-only)
set -euo pipefail
umask 077  # keys, passwords, client properties: their owner's only

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
users=(admin owner ingest validator rollup scheduler notifier analyst)
kafka_users=(admin ingest validator scheduler)
source_topics=(bars fills predictions improvement-events)
validator_topics=(bars fills)

die() { printf '[secure] error: %s\n' "$*" >&2; exit 1; }
password() { cat "$1/passwords/$2"; }

make_certificate() {  # make_certificate DIR NAME [SAN]: a server (and client) certificate
  local dir=$1 name=$2 san=${3:-IP:127.0.0.1,DNS:localhost}
  [ -f "$dir/$name.crt" ] && return
  openssl req -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -out "$dir/$name.csr" \
    -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -out "$dir/$name.crt" -days 30 2>/dev/null -extfile <(printf '%s\n' \
      "subjectAltName=$san" "extendedKeyUsage=serverAuth,clientAuth")
  cat "$dir/$name.key" "$dir/$name.crt" >"$dir/$name.pem"  # Kafka's PEM key store: key, chain
  rm -f "$dir/$name.csr"
}

cmd_certs() {
  local dir=$1
  mkdir -p "$dir/passwords"
  chmod 700 "$dir"
  if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" \
      -days 30 -subj "/CN=cie local CA" 2>/dev/null
  fi
  make_certificate "$dir" kafka
  make_certificate "$dir" postgres
  local user
  for user in "${users[@]}"; do
    [ -f "$dir/passwords/$user" ] || openssl rand -hex 16 >"$dir/passwords/$user"
  done
  chmod -R go-rwx "$dir"
}

# Secrets never go into a command's arguments (anyone on the machine can read those: ps,
# /proc/*/cmdline): they are written by shell builtins (printf, parameter expansion) into
# files only their owner reads, or onto a program's standard input.

cmd_kafka_format_args() {
  local dir=$1 user file="$1/kafka-scram.args"
  for user in "${kafka_users[@]}"; do
    printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' "$user" "$(password "$dir" "$user")"
  done >"$file"
  printf '@%s\n' "$file"
}

cmd_kafka_config() {
  local dir=$1 text
  text=$(<"$here/kafka/secure.properties")
  text=${text//@TLS_DIR@/$dir}
  printf '%s\n' "${text//@ADMIN_PASSWORD@/$(password "$dir" admin)}"
}

cmd_kafka_client() {
  local dir=$1 user=$2
  printf '%s\n' "security.protocol=SASL_SSL" "sasl.mechanism=SCRAM-SHA-512" \
    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$user\" password=\"$(password "$dir" "$user")\";" \
    "ssl.truststore.type=PEM" "ssl.truststore.location=$dir/ca.crt"
}

cmd_kafka_acls() {
  local bootstrap=$1 dir=$2 libs=${CIE_KAFKA_LIBS:-${CIE_STACK_DIR:-$repo/.stack}/kafka/libs}
  local client="$dir/admin.properties" topic args=()
  cmd_kafka_client "$dir" admin >"$client"
  acl() { java -Xmx128m -cp "$libs/*" org.apache.kafka.tools.AclCommand \
            --bootstrap-server "$bootstrap" --command-config "$client" --add "$@" >/dev/null \
          || die "AclCommand $*"; }
  for topic in "${source_topics[@]}"; do args+=(--topic "$topic"); done
  acl --allow-principal User:ingest --operation Read --operation Describe "${args[@]}" \
    --group cie-ingest
  args=()
  for topic in "${source_topics[@]}"; do args+=(--topic "$topic.dlq"); done
  acl --allow-principal User:ingest --operation Write --operation Describe "${args[@]}"
  # dead letters are written in transactions with the offsets (cie-ingest.dlq.<process id>)
  acl --allow-principal User:ingest --operation Write --operation Describe \
    --transactional-id cie-ingest.dlq. --resource-pattern-type prefixed
  args=()
  for topic in "${validator_topics[@]}"; do args+=(--topic "$topic"); done
  acl --allow-principal User:validator --operation Read --operation Describe "${args[@]}" \
    --group cie-validator
  acl --allow-principal User:scheduler --operation Write --operation Describe \
    --topic optimization-tasks --topic improvement-events
}

cmd_postgres_users() {
  local url=$1 dir=$2
  psql_() { "${PSQL:-/usr/lib/postgresql/15/bin/psql}" -X -q -v ON_ERROR_STOP=1 "$@"; }
  { local user
    for user in owner ingest validator analyst rollup scheduler notifier; do
      printf "\\set %s '%s'\n" "$user" "$(password "$dir" "$user")"
    done
    cat <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE cie_owner LOGIN CREATEROLE PASSWORD :'owner';
CREATE ROLE cie_ingest NOLOGIN;
CREATE ROLE cie_analytics NOLOGIN;
CREATE ROLE cie_rollup NOLOGIN;
CREATE ROLE cie_scheduler NOLOGIN;
CREATE ROLE cie_notifier NOLOGIN;
CREATE ROLE ingest LOGIN IN ROLE cie_ingest PASSWORD :'ingest';
CREATE ROLE validator LOGIN IN ROLE cie_ingest, cie_rollup PASSWORD :'validator';
CREATE ROLE rollup LOGIN IN ROLE cie_rollup PASSWORD :'rollup';
CREATE ROLE scheduler LOGIN IN ROLE cie_scheduler PASSWORD :'scheduler';
CREATE ROLE notifier LOGIN IN ROLE cie_notifier PASSWORD :'notifier';
CREATE ROLE analyst LOGIN IN ROLE cie_analytics PASSWORD :'analyst';
CREATE DATABASE cie OWNER cie_owner;
SQL
  } | psql_ "$url"
  # In the new database: TimescaleDB needs a superuser to be created (when it is preloaded),
  # and nobody but the owner creates objects in `public` (PostgreSQL 15's default, made
  # explicit; an older server or a restored dump would otherwise grant it to PUBLIC).
  psql_ "${url%/*}/cie" <<'SQL'
DO $$
BEGIN
    IF current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO cie_owner;
SQL
}

cmd_postgres_config() {
  local dir=$1 data=$2
  install -m 600 "$dir/postgres.key" "$data/server.key"
  install -m 644 "$dir/postgres.crt" "$data/server.crt"
  if [ "$(id -u)" = 0 ]; then chown postgres "$data/server.key" "$data/server.crt"; fi
  printf '%s\n' "ssl = on" "ssl_min_protocol_version = 'TLSv1.2'" \
    "password_encryption = 'scram-sha-256'" >>"$data/postgresql.conf"
  # No `host` line: a connection without TLS, or with any other method, is refused.
  printf '%s\n' "hostssl all all 127.0.0.1/32 scram-sha-256" >"$data/pg_hba.conf"
}

case "${1:-}" in
  certs) cmd_certs "$2" ;;
  certificate) make_certificate "$2" "$3" "$4" ;;
  kafka-format-args) cmd_kafka_format_args "$2" ;;
  kafka-config) cmd_kafka_config "$2" ;;
  kafka-client) cmd_kafka_client "$2" "$3" ;;
  kafka-acls) cmd_kafka_acls "$2" "$3" ;;
  postgres-users) cmd_postgres_users "$2" "$3" ;;
  postgres-config) cmd_postgres_config "$2" "$3" ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
