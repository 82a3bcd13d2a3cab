#!/usr/bin/env bash
# The side-by-side comparison: DLedger (Java), etcd, NATS JetStream and Kafka,
# and our replica group, three members each on loopback, one system at a time.
#
#   bash bench/compare/run.sh [--quick] [--systems a,b,...] [--out DIR]
#                             [--warmup-s S] [--duration-s S] [--kills N]
#                             [--failover-only] [--append] [--disk-probe-s S]
#
# Systems (default: all): ceiling dledger-java etcd nats kafka ours. `ceiling` is
# bench/ceiling, the leanest replication with our durability, measured as a bound. `nats`
# runs both nats (default sync) and nats-always; `kafka` both kafka (default flush) and
# kafka-flush (flush.messages=1); `ours` (alias: dledger, dledger-pagecache)
# both modes of dledger-replica, or reports them "not measured" when its
# `bench` subcommand does not exist yet.
#
# Full mode: 3 payloads x 4 in-flight levels per system variant, 5 s warm-up +
# 10 s measured per cell, then 10 leader kills per system; writes
# bench/compare/results/*.jsonl, BENCHMARKS.md and bench/compare/latency-throughput.png.
# --failover-only skips the matrix; --append adds to the results in --out instead of
# starting them afresh (the report then lists every command that contributed).
# Quick mode (CI): every system starts, takes writes (1 KiB, 16 in flight, 2+3 s)
# and reports; exits non-zero if any peer fails. Writes its report under --out only.
# Every run measures the raw disk under the work dir first and last (O_DSYNC writes of
# 4 KiB, 64 KiB and 1 MiB, --disk-probe-s each: 2.5 s full, 0.6 s quick) into disk.jsonl, and
# records per cell the machine's load, CPU busy fraction and the members' memory
# (VmRSS) into machine.jsonl; report.py derives the disk's bound from them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${BENCH_CACHE:-$ROOT/bench/.cache}"
export BENCH_CACHE="$CACHE"
# shellcheck source=versions.env
source "$HERE/versions.env"

QUICK=0; SYSTEMS="ceiling,dledger-java,etcd,nats,kafka,ours"; OUT=""; WARMUP_S=""; DURATION_S=""; KILLS=""
FAILOVER_ONLY=0; APPEND=0; DISK_S=""
ORIG_ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --systems) SYSTEMS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --warmup-s) WARMUP_S="$2"; shift ;;
    --duration-s) DURATION_S="$2"; shift ;;
    --kills) KILLS="$2"; shift ;;
    --failover-only) FAILOVER_ONLY=1 ;;
    --append) APPEND=1 ;;
    --disk-probe-s) DISK_S="$2"; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  PAYLOADS=(1024); INFLIGHTS=(16); : "${WARMUP_S:=2}"; : "${DURATION_S:=3}"; : "${KILLS:=0}"; : "${DISK_S:=0.6}"
  : "${OUT:=$(mktemp -d /tmp/bench-compare-quick.XXXXXX)}"
else
  PAYLOADS=(128 1024 16384); INFLIGHTS=(1 16 64 256); : "${WARMUP_S:=5}"; : "${DURATION_S:=10}"; : "${KILLS:=10}"; : "${DISK_S:=2.5}"
  : "${OUT:=$HERE/results}"
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"; FAILOVER="$OUT/failover.jsonl"; META="$OUT/run.json"
MACHINE="$OUT/machine.jsonl"; DISK="$OUT/disk.jsonl"
if [ "$APPEND" = 0 ]; then : >"$RESULTS"; : >"$FAILOVER"; : >"$MACHINE"; : >"$DISK"; fi

WORK="$(mktemp -d /tmp/bench-compare.XXXXXX)"
export BENCH_WORK="$WORK"
CURRENT=""     # the cluster.sh system currently up, for the trap
cleanup() {
  set +e
  [ -n "$CURRENT" ] && bash "$HERE/cluster.sh" "$CURRENT" down >/dev/null 2>&1
  bash "$HERE/ours.sh" down >/dev/null 2>&1
  # Anything left from a member that was restarted by a hook.
  for f in "$WORK"/*/n*.pid; do
    [ -f "$f" ] && { p="$(cat "$f")"; kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null; }
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[run $(date +%H:%M:%S)] $*" >&2; }
FAILED=()
RESTARTED=() # variants whose first group took no write and a fresh one did
fail() { log "FAILED: $*"; FAILED+=("$*"); }

log "fetching and building peers into $CACHE"
bash "$HERE/fetch.sh" all

JAVA_OPENS="--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED"
driver_java() { java -Xms256m -Xmx1g $JAVA_OPENS -Dorg.slf4j.simpleLogger.defaultLogLevel=off \
  -cp "$CACHE/driver-java/lib/*" bench.Main "$@"; }
driver_go() { "$CACHE/bin/driver-go" "$@"; }

ENDPOINTS_etcd="127.0.0.1:12379,127.0.0.1:12389,127.0.0.1:12399"
ENDPOINTS_nats="127.0.0.1:14222,127.0.0.1:14223,127.0.0.1:14224"
ENDPOINTS_dledger_java="127.0.0.1:40911,127.0.0.1:40912,127.0.0.1:40913"
ENDPOINTS_kafka="127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"

# variant -> cluster.sh system, driver invocation prefix, version, durability label
variant_info() {
  case "$1" in
    etcd) CL=etcd; VERSION="$ETCD_VERSION"; DUR="fsync (WAL fdatasync before ack)"
      DRV=(driver_go bench -system etcd -endpoints "$ENDPOINTS_etcd") ;;
    nats) CL=nats; VERSION="$NATS_SERVER_VERSION"; DUR="page cache (default sync_interval: fsync every 2 min)"
      DRV=(driver_go bench -system nats -endpoints "$ENDPOINTS_nats") ;;
    nats-always) CL=nats-always; VERSION="$NATS_SERVER_VERSION"; DUR="fsync (sync_interval: always)"
      DRV=(driver_go bench -system nats -endpoints "$ENDPOINTS_nats") ;;
    kafka) CL=kafka; VERSION="$KAFKA_VERSION"; DUR="page cache (default: no flush before ack)"
      DRV=(driver_java bench --system kafka --endpoints "$ENDPOINTS_kafka") ;;
    kafka-flush) CL=kafka; VERSION="$KAFKA_VERSION"; DUR="fsync (flush.messages=1)"
      DRV=(driver_java bench --system kafka --flush-every-message true --endpoints "$ENDPOINTS_kafka") ;;
    dledger-java) CL=dledger-java; VERSION="$DLEDGER_VERSION"; DUR="page cache (mmap; flush thread every 10 ms; no sync option)"
      DRV=(driver_java bench --system dledger --endpoints "$ENDPOINTS_dledger_java") ;;
  esac
}

# Rewrites the driver's "system" field to the variant name (nats-always, kafka-flush).
tag() { sed -e "s/\"system\":\"[^\"]*\"/\"system\":\"$1\"/"; }

# The machine beside each cell (probe.py, stdlib Python): load average, CPU busy
# fraction and the members' CPU over the measured window (from the driver's launch +
# warm-up, for the measured duration), and their resident memory, sampled every 0.5 s.
# Members are found through the pid files cluster.sh / ours.sh write under PIDDIR.
# A probe that fails leaves its line out ("not measured"); it never fails the run.
window_start() { # piddir variant payload inflight
  python3 "$HERE/probe.py" window --pid-dir "$1" --delay "$WARMUP_S" --duration "$DURATION_S" \
    --tag system="$2" --tag payload_bytes="$3" --tag in_flight="$4" --tag phase=load \
    >>"$MACHINE" 2>>"$OUT/driver.log" &
  PROBE_PID=$!
}
window_end() { # driver-ok (0 = it finished normally; otherwise stop the probe now)
  [ "$1" = 0 ] || kill "$PROBE_PID" 2>/dev/null || true
  wait "$PROBE_PID" 2>/dev/null || true
}
idle_rss() { # piddir variant payload: one sample after the group started, before load
  python3 "$HERE/probe.py" rss --pid-dir "$1" --tag system="$2" --tag payload_bytes="$3" --tag phase=idle \
    >>"$MACHINE" 2>>"$OUT/driver.log" || true
}

# One cell of the matrix. Both drivers take --flag (Go's flag package accepts it too).
bench_cell() { # variant payload inflight [extra driver args...]
  local v="$1" p="$2" n="$3"; shift 3
  local line
  window_start "$WORK/$CL" "$v" "$p" "$n"
  if line="$("${DRV[@]}" "$@" --version "$VERSION" --durability "$DUR" --payload "$p" --inflight "$n" \
      --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" 2>>"$OUT/driver.log" | tail -1)" && [ -n "$line" ]; then
    window_end 0
    echo "$line" | tag "$v" >>"$RESULTS"
    log "$v ${p}B x$n: $line"
    case "$line" in *'"ops":0,'*) fail "$v ${p}B x$n: no write acknowledged in the measured period" ;; esac
  else
    window_end 1
    echo "{\"system\":\"$v\",\"version\":\"$VERSION\",\"durability\":\"$DUR\",\"payload_bytes\":$p,\"in_flight\":$n,\"error\":\"driver failed\"}" >>"$RESULTS"
    fail "$v ${p}B x$n: driver failed (see $OUT/driver.log)"
  fi
}

ping_group() { # [driver args...]: 0 once the group took one write (the driver tries for 30 s)
  "${DRV[0]}" ping "${DRV[@]:2}" "$@" 2>>"$OUT/driver.log"
}
show_group_logs() { # variant: what the driver and each member said last
  log "$1: the driver's last lines:"; tail -5 "$OUT/driver.log" >&2 || true
  local f
  for f in "$WORK/$CL"/n*.log "$WORK/$CL"/n*/logs/dledger/dledger.log; do
    [ -e "$f" ] || continue
    log "$1: the last lines of $f:"; tail -15 "$f" >&2 || true
  done
}

run_variant() { # variant
  local v="$1"
  [ "$FAILOVER_ONLY" = 1 ] && return 0
  variant_info "$v"
  for p in "${PAYLOADS[@]}"; do
    # A fresh group per payload size keeps every store small; Kafka, slow to start,
    # keeps its group and gets a fresh topic instead.
    if [ "$CL" != kafka ] || [ -z "$CURRENT" ]; then
      CURRENT="$CL"
      bash "$HERE/cluster.sh" "$CL" up || { fail "$v: cluster did not start"; bash "$HERE/cluster.sh" "$CL" down; CURRENT=""; return 1; }
    fi
    local extra=()
    [ "$CL" = kafka ] && extra=(--topic "bench-$v-$p")
    # Wait until the group takes a write (leader elected, topic/stream created).
    # A group that takes none gets its logs shown and one fresh start: a CI run once
    # saw DLedger's take no write in 30 s, and nothing was left to tell why.
    if ! ping_group "${extra[@]}"; then
      show_group_logs "$v"
      log "$v: the group took no write within 30 s; starting a fresh group once more"
      bash "$HERE/cluster.sh" "$CL" down; CURRENT=""
      if bash "$HERE/cluster.sh" "$CL" up && CURRENT="$CL" && ping_group "${extra[@]}"; then
        log "$v: the fresh group took a write"
        RESTARTED+=("$v")
      else
        show_group_logs "$v"
        fail "$v: started but took no write within 30 s, twice, on two fresh groups"
        echo "{\"system\":\"$v\",\"version\":\"$VERSION\",\"durability\":\"$DUR\",\"payload_bytes\":$p,\"in_flight\":0,\"error\":\"took no write\"}" >>"$RESULTS"
        bash "$HERE/cluster.sh" "$CL" down; CURRENT=""; return 1
      fi
    fi
    idle_rss "$WORK/$CL" "$v" "$p"
    for n in "${INFLIGHTS[@]}"; do
      bench_cell "$v" "$p" "$n" "${extra[@]}"
    done
    if [ "$CL" != kafka ]; then bash "$HERE/cluster.sh" "$CL" down; CURRENT=""; fi
  done
}

run_failover() { # variant
  local v="$1"
  variant_info "$v"
  [ "$KILLS" -gt 0 ] || return 0
  CURRENT="$CL"
  bash "$HERE/cluster.sh" "$CL" up || { fail "$v failover: cluster did not start"; bash "$HERE/cluster.sh" "$CL" down; CURRENT=""; return 1; }
  log "$v: failover, $KILLS leader kills"
  local extra=(); [ "$CL" = kafka ] && extra=(--topic bench-failover)
  # DRV is "<driver> bench ..."; the same driver runs the failover mode.
  local drv=("${DRV[0]}" failover "${DRV[@]:2}")
  if "${drv[@]}" "${extra[@]}" --version "$VERSION" --durability "$DUR" --kills "$KILLS" \
      --hook "bash $HERE/cluster.sh $CL" 2>>"$OUT/driver.log" | tag "$v" | tee -a "$FAILOVER" >&2 \
      && [ "${PIPESTATUS[0]}" = 0 ]; then
    :
  else
    fail "$v: failover run failed (see $OUT/driver.log)"
  fi
  bash "$HERE/cluster.sh" "$CL" down; CURRENT=""
}

run_ours() {
  if ! bash "$HERE/ours.sh" available; then
    log "ours: target/release/dledger-replica has no 'bench' subcommand yet: not measured"
    echo '{"system":"dledger","not_measured":"dledger-replica bench is not available"}' >>"$RESULTS"
    echo '{"system":"dledger-pagecache","not_measured":"dledger-replica bench is not available"}' >>"$RESULTS"
    return 0
  fi
  for mode in durable pagecache; do
    local v=dledger; [ "$mode" = pagecache ] && v=dledger-pagecache
    for p in "${PAYLOADS[@]}"; do
      bash "$HERE/ours.sh" up "$mode" || { fail "$v: did not start"; continue; }
      idle_rss "$WORK/ours" "$v" "$p"
      for n in "${INFLIGHTS[@]}"; do
        local line
        window_start "$WORK/ours" "$v" "$p" "$n"
        if line="$(bash "$HERE/ours.sh" bench "$mode" "$p" "$n" "$WARMUP_S" "$DURATION_S" 2>>"$OUT/driver.log" | tail -1)" && [ -n "$line" ]; then
          window_end 0
          echo "$line" >>"$RESULTS"; log "$v ${p}B x$n: $line"
        else
          window_end 1
          fail "$v ${p}B x$n: driver failed"
        fi
      done
      bash "$HERE/ours.sh" down
    done
    if [ "$mode" = durable ] && [ "$KILLS" -gt 0 ]; then
      bash "$HERE/ours.sh" up "$mode" && bash "$HERE/ours.sh" failover "$mode" "$KILLS" 2>>"$OUT/driver.log" >>"$FAILOVER" \
        || fail "$v: failover failed"
      bash "$HERE/ours.sh" down
    fi
  done
}

# The leanest replication this machine can run (bench/ceiling): one thread per member,
# one fdatasync per batch on each, a majority before the answer, nothing else. Measured
# in every cell beside the systems, so each can be read as a fraction of what the machine
# allows with that durability (the disk's bound leaves out the CPU and the network).
run_ceiling() {
  local bin="$CACHE/ceiling/release/ceiling" dir="$WORK/ceiling"
  if ! cargo build --release --quiet --manifest-path "$ROOT/bench/ceiling/Cargo.toml" \
      --target-dir "$CACHE/ceiling" 2>>"$OUT/driver.log"; then
    fail "ceiling: did not build (see $OUT/driver.log)"; return 0
  fi
  "$bin" prepare --dir "$dir" || { fail "ceiling: could not write its files"; return 0; }
  for p in "${PAYLOADS[@]}"; do
    for n in "${INFLIGHTS[@]}"; do
      local line
      window_start "$dir" ceiling "$p" "$n"
      if line="$("$bin" --dir "$dir" --payload-bytes "$p" --in-flight "$n" --warmup-s "${WARMUP_S%.*}" \
          --duration-s "${DURATION_S%.*}" --json 2>>"$OUT/driver.log" | tail -1)" && [ -n "$line" ]; then
        window_end 0
        echo "$line" >>"$RESULTS"; log "ceiling ${p}B x$n: $line"
      else
        window_end 1
        fail "ceiling ${p}B x$n: failed"
      fi
    done
  done
  rm -rf "$dir"
}

load1() { cut -d' ' -f1 /proc/loadavg; }
START_S=$SECONDS
python3 - "$META" "$QUICK" "$WARMUP_S" "$DURATION_S" "$KILLS" "$(load1)" "$APPEND" "${ORIG_ARGS[@]}" <<'PY'
import json, os, platform, sys
meta, quick, warm, dur, kills, load, append = sys.argv[1:8]
sys.argv = sys.argv[:7] + sys.argv[8:]
if append == "1" and os.path.exists(meta):
    m = json.load(open(meta))
    cmd = "bash bench/compare/run.sh" + "".join(" " + a for a in sys.argv[7:])
    extra = m.setdefault("extra_commands", [])
    if cmd not in extra:
        extra.append(cmd)
    m["appending"] = True
    json.dump(m, open(meta, "w"))
    sys.exit(0)
cpu = "unknown"
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"):
        cpu = l.split(":", 1)[1].strip(); break
mem_kib = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
cmd = "bash bench/compare/run.sh" + "".join(" " + a for a in sys.argv[7:])
json.dump({"command": cmd, "quick": quick == "1", "warmup_s": float(warm), "duration_s": float(dur),
           "kills": int(kills), "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
           "kernel": platform.release(), "load1_start": float(load)}, open(meta, "w"))
PY

# The physical bound, in this run: the raw disk's O_DSYNC figures where the members
# write (WORK, the same filesystem as their data dirs), before any system starts and
# again after the last one stopped (the disk is shared; the report credits it with the
# better of the two). Skipped with --failover-only, which measures no throughput.
disk_probe() { # start|end
  [ "$FAILOVER_ONLY" = 1 ] && return 0
  local line
  if line="$(python3 "$HERE/probe.py" disk --dir "$WORK/disk-probe" --seconds "$DISK_S" --tag phase="$1" \
      --tag command="bash bench/compare/run.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}" --tag load1="$(load1)")"; then
    echo "$line" >>"$DISK"
    log "raw disk at the $1 (O_DSYNC, 1 in flight): $(python3 -c 'import json,sys; print(", ".join("%d KiB %.3f ms p50 %.0f/s %.0f MB/s" % (s["bytes"]//1024, s["p50_ms"], s["writes_per_s"], s["mb_per_s"]) for s in json.loads(sys.argv[1])["sizes"]))' "$line")"
  else
    log "the disk probe ($1) failed; the report shows what it lacks as not measured"
  fi
  rm -rf "$WORK/disk-probe"
}
disk_probe start

IFS=, read -r -a WANT <<<"$SYSTEMS"
for s in "${WANT[@]}"; do
  case "$s" in
    dledger-java) run_variant dledger-java || true; run_failover dledger-java || true ;;
    etcd) run_variant etcd || true; run_failover etcd || true ;;
    nats) run_variant nats || true; run_variant nats-always || true; run_failover nats || true ;;
    kafka)
      run_variant kafka || true; run_variant kafka-flush || true
      [ -n "$CURRENT" ] && { bash "$HERE/cluster.sh" kafka down; CURRENT=""; }
      run_failover kafka || true ;;
    ours|dledger|dledger-pagecache) run_ours ;;
    ceiling) run_ceiling ;;
    *) fail "unknown system $s" ;;
  esac
done

disk_probe end

ELAPSED=$((SECONDS - START_S))
python3 - "$META" "$ELAPSED" "$(load1)" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
if m.pop("appending", False):
    m["extra_elapsed_s"] = m.get("extra_elapsed_s", 0) + int(sys.argv[2])
else:
    m["elapsed_s"] = int(sys.argv[2]); m["load1_end"] = float(sys.argv[3])
json.dump(m, open(sys.argv[1], "w"))
PY

if [ "$QUICK" = 1 ]; then
  "$CACHE/venv/bin/python" "$HERE/report.py" --results "$OUT" --md "$OUT/BENCHMARKS.md" --png "$OUT/latency-throughput.png"
else
  "$CACHE/venv/bin/python" "$HERE/report.py" --results "$OUT" --md "$ROOT/BENCHMARKS.md" --png "$HERE/latency-throughput.png"
fi
log "done in ${ELAPSED}s; results in $OUT"
if [ ${#RESTARTED[@]} -gt 0 ]; then
  log "took a write only on a second fresh group (logs of the first above): ${RESTARTED[*]}"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  log "${#FAILED[@]} failure(s):"; printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
