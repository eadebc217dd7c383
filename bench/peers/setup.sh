#!/usr/bin/env bash
# Installs the sinks bench/peers/run.py compares with `cie consume`, into .stack/peers
# (git-ignored), once; later runs find them and return at once.
#
#   bench/peers/setup.sh [telegraf] [quix] [connect]     (no argument: all three)
#
# - telegraf: `go install` of Telegraf from the Go module proxy, built with only the plugins
#   the comparison uses (custom build tags: inputs.kafka_consumer, parsers.json,
#   outputs.postgresql); about a minute and 40 MB.
# - quix:     Quix Streams with its PostgreSQL extra, from PyPI, in a virtualenv of its own (its
#             dependencies must not meet the project's).
# - connect:  Kafka Connect (standalone) and the Debezium JDBC sink connector with the PostgreSQL
#             JDBC driver, jars from Maven Central (bench/peers/connect/pom.xml).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
peers="${CIE_STACK_DIR:-$repo/.stack}/peers"
telegraf_version=v1.37.2
quix_version=3.28.1

say() { echo "[peers] $*"; }
die() { echo "[peers] error: $*" >&2; exit 1; }

telegraf() {
  [ -x "$peers/bin/telegraf" ] && return
  command -v go >/dev/null || die "Go is needed to build Telegraf"
  say "building Telegraf $telegraf_version (go install, three plugins)"
  GOBIN="$peers/bin" go install \
    -tags "custom,inputs.kafka_consumer,parsers.json,outputs.postgresql" \
    "github.com/influxdata/telegraf/cmd/telegraf@$telegraf_version" >"$peers/telegraf-build.log" 2>&1 \
    || die "go install failed; see $peers/telegraf-build.log"
}

quix() {
  [ -x "$peers/quix/bin/python" ] && "$peers/quix/bin/python" -c 'import quixstreams' 2>/dev/null \
    && return
  say "installing Quix Streams $quix_version in $peers/quix"
  python3 -m venv "$peers/quix"
  "$peers/quix/bin/pip" install -q "quixstreams[postgresql]==$quix_version" \
    >"$peers/quix-pip.log" 2>&1 || die "pip install failed; see $peers/quix-pip.log"
}

connect() {
  local pom="$repo/bench/peers/connect/pom.xml" libs="$peers/connect/libs"
  local stamp="$libs/.resolved-$(sha256sum "$pom" | cut -c1-16)"
  [ -f "$stamp" ] && return
  say "resolving Kafka Connect and the Debezium JDBC sink with Maven"
  rm -rf "$libs"
  mkdir -p "$libs"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs" \
    >"$peers/connect-maven.log" 2>&1 || die "Maven failed; see $peers/connect-maven.log"
  touch "$stamp"
}

mkdir -p "$peers"
[ $# -gt 0 ] || set -- telegraf quix connect
for peer in "$@"; do
  case "$peer" in
    telegraf|quix|connect) "$peer" ;;
    *) die "unknown peer $peer (telegraf, quix or connect)" ;;
  esac
done
