#!/usr/bin/env bash
# Fetches and builds every peer of the comparison and the load drivers into
# bench/.cache/ (git-ignored), using only this machine's package registries:
# the Go module proxy (etcd, nats-server, the Go driver), Maven Central (DLedger,
# Kafka, the Java driver) and PyPI (matplotlib for the report).
# Idempotent: whatever is already built is reused.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${BENCH_CACHE:-$ROOT/bench/.cache}"
# shellcheck source=versions.env
source "$HERE/versions.env"
mkdir -p "$CACHE/bin"
log() { echo "[fetch] $*" >&2; }

# Builds a Go main package from a module version inside a throw-away module, so
# that the module's own replace directives (etcd has them) do not get in the way.
go_build_main() { # name module version package
  local name="$1" module="$2" version="$3" pkg="$4" dir="$CACHE/build-$1"
  if [ -x "$CACHE/bin/$name" ] && [ "$(cat "$CACHE/bin/$name.version" 2>/dev/null)" = "$version" ]; then
    return 0
  fi
  log "building $name $version from $module"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init "bench-build/$name" >/dev/null 2>&1 \
    && go get "$module@$version" >/dev/null \
    && CGO_ENABLED=0 go build -trimpath -o "$CACHE/bin/$name" "$pkg")
  echo "$version" >"$CACHE/bin/$name.version"
}

fetch_etcd() {
  go_build_main etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
}
fetch_nats() {
  go_build_main nats-server github.com/nats-io/nats-server/v2 "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2
}
fetch_go_driver() {
  local out="$CACHE/bin/driver-go"
  if [ -x "$out" ] && [ -z "$(find "$HERE/driver-go" -newer "$out" -type f | head -1)" ]; then return 0; fi
  log "building the Go load driver"
  (cd "$HERE/driver-go" && go build -trimpath -o "$out" .)
}

# Copies a Maven artifact and its runtime dependency tree into a lib directory.
mvn_lib() { # dir pom
  local dir="$1" pom="$2"
  if [ -f "$dir/.done" ] && [ "$dir/.done" -nt "$pom" ]; then return 0; fi
  log "resolving $(basename "$dir") from Maven Central"
  rm -rf "$dir" && mkdir -p "$dir"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$dir" >&2
  touch "$dir/.done"
}

fetch_dledger() {
  local pom="$CACHE/dledger-pom.xml"
  sed -e "s/@DLEDGER_VERSION@/$DLEDGER_VERSION/" "$HERE/poms/dledger-server.xml" >"$pom.tmp"
  cmp -s "$pom.tmp" "$pom" || mv "$pom.tmp" "$pom"; rm -f "$pom.tmp"
  mvn_lib "$CACHE/dledger-lib" "$pom"
}
fetch_kafka() {
  local pom="$CACHE/kafka-pom.xml"
  sed -e "s/@KAFKA_VERSION@/$KAFKA_VERSION/; s/@KAFKA_SCALA@/$KAFKA_SCALA/" "$HERE/poms/kafka-server.xml" >"$pom.tmp"
  cmp -s "$pom.tmp" "$pom" || mv "$pom.tmp" "$pom"; rm -f "$pom.tmp"
  mvn_lib "$CACHE/kafka-lib" "$pom"
}
fetch_java_driver() {
  local dir="$CACHE/driver-java"
  local newest
  newest="$(find "$HERE/driver-java" "$HERE/versions.env" -newer "$dir/.done" -type f 2>/dev/null | head -1 || true)"
  if [ -f "$dir/.done" ] && [ -z "$newest" ]; then return 0; fi
  log "building the Java load driver"
  rm -rf "$dir" && mkdir -p "$dir/lib"
  mvn -q -B -f "$HERE/driver-java/pom.xml" \
    -Ddledger.version="$DLEDGER_VERSION" -Dkafka.version="$KAFKA_VERSION" \
    -DbuildDirectory="$dir/target" package dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir/lib" >&2
  cp "$dir"/target/*.jar "$dir/lib/"
  touch "$dir/.done"
}
fetch_python() {
  if [ -x "$CACHE/venv/bin/python" ] && "$CACHE/venv/bin/python" -c 'import matplotlib' 2>/dev/null; then return 0; fi
  log "creating the report venv (matplotlib from PyPI)"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install -q matplotlib >&2
}

what="${1:-all}"
case "$what" in
  all) fetch_python; fetch_etcd; fetch_nats; fetch_go_driver; fetch_dledger; fetch_kafka; fetch_java_driver ;;
  etcd) fetch_etcd ;;
  nats) fetch_nats ;;
  go-driver) fetch_go_driver ;;
  dledger) fetch_dledger ;;
  kafka) fetch_kafka ;;
  java-driver) fetch_java_driver ;;
  python) fetch_python ;;
  *) echo "usage: fetch.sh [all|etcd|nats|go-driver|dledger|kafka|java-driver|python]" >&2; exit 2 ;;
esac
