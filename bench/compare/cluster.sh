#!/usr/bin/env bash
# Starts, kills and stops a three-member group of one peer on loopback.
#
#   cluster.sh SYSTEM up              fresh data dir, start all three, wait until they listen
#   cluster.sh SYSTEM kill I          kill -9 member I (0..2)
#   cluster.sh SYSTEM start I         restart member I on its existing data
#   cluster.sh SYSTEM down            kill every member and delete the data
#
# SYSTEM: etcd | nats | nats-always | dledger-java | kafka
# Environment: BENCH_WORK (required; data, logs and pid files go under it),
# BENCH_CACHE (built binaries and jars; default bench/.cache).
# Ports: etcd 12379+10i (client) / 12380+10i (peer); nats 14222+i / 16222+i;
# dledger-java 40911+i; kafka 19092+i (broker) / 19193+i (controller).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${BENCH_CACHE:-$ROOT/bench/.cache}"
: "${BENCH_WORK:?set BENCH_WORK to a scratch directory}"
SYSTEM="${1:?system}"; ACTION="${2:?action}"; MEMBER="${3:-}"
DIR="$BENCH_WORK/$SYSTEM"
JAVA_OPTS_MEMBER="${JAVA_OPTS_MEMBER:--Xms256m -Xmx1g}"
# DLedger 0.2.7 ships netty 4.0 and unmaps files by reflection; on Java 17 both need these.
JAVA_OPENS="--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED"
KAFKA_CLUSTER_ID="MkU3OEVBNTcwNTJENDM2Qg"

log() { echo "[cluster $SYSTEM] $*" >&2; }

client_port() { # member -> the port a client connects to
  case "$SYSTEM" in
    etcd) echo $((12379 + 10 * $1)) ;;
    nats|nats-always) echo $((14222 + $1)) ;;
    dledger-java) echo $((40911 + $1)) ;;
    kafka) echo $((19092 + $1)) ;;
  esac
}

wait_port() { # port timeout_s
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.2
  done
}

# Writes member I's config and prints the command line that runs it.
member_cmd() {
  local i="$1" d="$DIR/n$1"
  mkdir -p "$d"
  case "$SYSTEM" in
    etcd)
      local cluster="n0=http://127.0.0.1:12380,n1=http://127.0.0.1:12390,n2=http://127.0.0.1:12400"
      local c=$((12379 + 10 * i)) p=$((12380 + 10 * i))
      # 8 GiB backend quota: the run writes unique keys and never deletes them.
      echo "$CACHE/bin/etcd --name n$i --data-dir $d/data" \
        "--listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c" \
        "--listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p" \
        "--initial-cluster $cluster --initial-cluster-state new --initial-cluster-token bench" \
        "--quota-backend-bytes 8589934592 --log-level error"
      ;;
    nats|nats-always)
      local sync=""
      [ "$SYSTEM" = nats-always ] && sync="sync_interval: always"
      cat >"$d/nats.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((14222 + i))
jetstream {
  store_dir: "$d/js"
  max_file_store: 64G
  $sync
}
cluster {
  name: bench
  listen: 127.0.0.1:$((16222 + i))
  routes: [nats-route://127.0.0.1:16222, nats-route://127.0.0.1:16223, nats-route://127.0.0.1:16224]
}
CONF
      echo "$CACHE/bin/nats-server -c $d/nats.conf"
      ;;
    dledger-java)
      # DLedger's own command-line server (BossCommand `server`), default settings.
      # Its log goes to ~/logs/dledger/: user.home gives each member its own.
      echo "java $JAVA_OPTS_MEMBER $JAVA_OPENS -Duser.home=$d -cp $CACHE/dledger-lib/* io.openmessaging.storage.dledger.cmdline.BossCommand server" \
        "--group bench --id n$i --peers n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913" \
        "--store-base-dir $d/store"
      ;;
    kafka)
      cat >"$d/server.properties" <<CONF
process.roles=broker,controller
node.id=$((i + 1))
controller.quorum.voters=1@127.0.0.1:19193,2@127.0.0.1:19194,3@127.0.0.1:19195
listeners=PLAINTEXT://127.0.0.1:$((19092 + i)),CONTROLLER://127.0.0.1:$((19193 + i))
advertised.listeners=PLAINTEXT://127.0.0.1:$((19092 + i))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/logs
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
CONF
      echo "java $JAVA_OPTS_MEMBER -cp $CACHE/kafka-lib/* kafka.Kafka $d/server.properties"
      ;;
    *) echo "unknown system $SYSTEM" >&2; exit 2 ;;
  esac
}

start_member() {
  local i="$1" cmd
  cmd="$(member_cmd "$i")"
  # setsid: the member gets its own process group, so `kill` reaches a JVM's children too.
  # The command line is split on spaces on purpose (no argument contains one); the
  # classpath globs are quoted for java by disabling pathname expansion.
  (set -f; exec setsid $cmd >>"$DIR/n$i.log" 2>&1) &
  echo $! >"$DIR/n$i.pid"
}

kill_member() {
  local i="$1" pid
  pid="$(cat "$DIR/n$i.pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  # Wait until the process is gone and its port is free, so a restart can bind it.
  # A zombie (state Z: dead, not yet reaped by whoever adopted it) counts as gone.
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.02
  done
  rm -f "$DIR/n$i.pid"
}

case "$ACTION" in
  up)
    for i in 0 1 2; do kill_member "$i"; done
    rm -rf "$DIR" && mkdir -p "$DIR"
    # Refuse to start over a group left running by someone else: the drivers would
    # measure that one instead.
    # A JVM killed a moment ago may hold its port for a few seconds more: wait up to 30 s.
    for i in 0 1 2; do
      for t in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$(client_port "$i")") 2>/dev/null || break
        if [ "$t" = 150 ]; then
          log "port $(client_port "$i") is already in use; stop whatever listens there first"; exit 1
        fi
        sleep 0.2
      done
    done
    if [ "$SYSTEM" = kafka ]; then
      for i in 0 1 2; do
        member_cmd "$i" >/dev/null
        (set -f; java -Xmx256m -cp "$CACHE/kafka-lib/*" kafka.tools.StorageTool format \
          -t "$KAFKA_CLUSTER_ID" -c "$DIR/n$i/server.properties" >>"$DIR/n$i.log" 2>&1) \
          || { log "storage format of n$i failed; see $DIR/n$i.log"; exit 1; }
      done
    fi
    for i in 0 1 2; do start_member "$i"; done
    for i in 0 1 2; do
      wait_port "$(client_port "$i")" 90 || { log "member n$i did not listen; tail of its log:"; tail -20 "$DIR/n$i.log" >&2; exit 1; }
    done
    log "up"
    ;;
  kill) kill_member "${MEMBER:?member}" ;;
  start)
    start_member "${MEMBER:?member}"
    wait_port "$(client_port "$MEMBER")" 90 || { log "member n$MEMBER did not come back"; exit 1; }
    ;;
  down)
    for i in 0 1 2; do kill_member "$i"; done
    rm -rf "$DIR"
    ;;
  pids) cat "$DIR"/n*.pid 2>/dev/null || true ;;
  *) echo "unknown action $ACTION" >&2; exit 2 ;;
esac
