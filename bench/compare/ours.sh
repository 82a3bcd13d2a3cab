#!/usr/bin/env bash
# The slot for our own replica group (systems `dledger`, fsync, and `dledger-pagecache`)
# in the comparison. run.sh calls it exactly like the peers' drivers:
#
#   ours.sh available                 exit 0 when target/release/dledger-replica has `bench`
#   ours.sh up MODE                   start three replicas on loopback (MODE: durable|pagecache)
#   ours.sh down                      kill them and delete their data
#   ours.sh kill I | start I          kill -9 / restart member I (the failover hook)
#   ours.sh ping                      one write; exit 0 once it is acknowledged
#   ours.sh bench MODE PAYLOAD INFLIGHT WARMUP_S DURATION_S
#                                     prints ONE JSON result line (format in README.md)
#   ours.sh failover MODE KILLS       prints one {"system","kill","gap_ms",...} line per kill
#
# `dledger-replica bench` prints the same JSON lines as driver-go/driver-java,
# through our own Rust client over the binary protocol (pipelined, one entry
# per request); `bench --failover-kills` kills leaders through this script.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${DLEDGER_REPLICA_BIN:-$ROOT/target/release/dledger-replica}"
: "${BENCH_WORK:=/tmp/dledger-bench}"
DIR="$BENCH_WORK/ours"
PEERS="n0=127.0.0.1:21911,n1=127.0.0.1:21912,n2=127.0.0.1:21913"
ENDPOINTS="127.0.0.1:21911,127.0.0.1:21912,127.0.0.1:21913"
# The flag that selects page-cache mode in `serve` (if ours has one); adjust when it lands.
PAGECACHE_FLAG="--flush-mode=page-cache"
HTTP="127.0.0.1:28080,127.0.0.1:28081,127.0.0.1:28082"

version() { "$BIN" --version 2>/dev/null | awk '{print $NF}' || echo unknown; }
durability() { [ "$1" = pagecache ] && echo "page cache (ack before fsync)" || echo "fsync (fdatasync, group commit)"; }
system_name() { [ "$1" = pagecache ] && echo dledger-pagecache || echo dledger; }

start_member() { # i mode
  local i="$1" mode="$(cat "$DIR/mode")" extra=()
  [ "$mode" = pagecache ] && extra=("$PAGECACHE_FLAG")
  mkdir -p "$DIR/n$i"
  setsid "$BIN" serve --group bench --id "n$i" --peers "$PEERS" --data-dir "$DIR/n$i" \
    --listen "127.0.0.1:$((21911 + i))" --http-listen "127.0.0.1:$((28080 + i))" \
    --http-peers "n0=127.0.0.1:28080,n1=127.0.0.1:28081,n2=127.0.0.1:28082" "${extra[@]}" \
    >>"$DIR/n$i.log" 2>&1 &
  echo $! >"$DIR/n$i.pid"
}
kill_member() {
  local pid; pid="$(cat "$DIR/n$1.pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.02
  done
  rm -f "$DIR/n$1.pid"
}

case "${1:-}" in
  available) [ -x "$BIN" ] && "$BIN" bench --help >/dev/null 2>&1 ;;
  up)
    for i in 0 1 2; do kill_member "$i"; done
    rm -rf "$DIR" && mkdir -p "$DIR" && echo "${2:?mode}" >"$DIR/mode"
    for i in 0 1 2; do start_member "$i"; done
    for i in 0 1 2; do
      for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$((21911 + i))") 2>/dev/null && break; sleep 0.1; done
    done ;;
  down) for i in 0 1 2; do kill_member "$i"; done; rm -rf "$DIR" ;;
  kill) kill_member "${2:?member}" ;;
  start) start_member "${2:?member}" ;;
  ping) "$BIN" append --servers "$ENDPOINTS" --group bench ping >/dev/null ;;
  bench)
    mode="$2"
    "$BIN" bench --json --servers "$ENDPOINTS" --group bench --system "$(system_name "$mode")" \
      --durability "$(durability "$mode")" \
      --payload-bytes "$3" --in-flight "$4" --warmup-s "$5" --duration-s "$6" ;;
  failover)
    mode="$2"
    "$BIN" bench --json --failover-kills "$3" --hook "bash $HERE/ours.sh" \
      --servers "$ENDPOINTS" --group bench --http "$HTTP" --system "$(system_name "$mode")" \
      --durability "$(durability "$mode")" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
