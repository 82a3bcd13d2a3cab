#!/usr/bin/env bash
# Tears the one-node test cluster down and removes everything up.sh left on the
# machine: its processes (by recorded pid, and the containers by runc's state),
# the pods' cgroups, mounts and network namespaces, both bridges, and every
# iptables chain the kubelet and kube-proxy made (IPv4 and IPv6), among them the
# kubelet's KUBE-FIREWALL, which drops traffic to 127.0.0.0/8 from other sources.
# Idempotent; works when the processes are already dead and with no state at all.
# Keeps the build cache. Set DLEDGER_E2E_KEEP_STATE=1 to keep the state folder
# (logs, certificates) for a post-mortem.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
[ "$(id -u)" -eq 0 ] || die "down.sh needs root"

# 1. The recorded processes, newest first, TERM then KILL.
stop_pid() { # <name>
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  # A pid recorded by a run whose processes have died may have been reused: only a
  # process whose command line names the component is ours.
  if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$1"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
}
for name in coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_pid "$name"
done

# 2. The containers: runc's own state (up.sh gives containerd a runc root of its
# own) lists them even when containerd and its shims are gone.
if [ -d "$RUNC_ROOT" ] && command -v runc >/dev/null; then
  for root in "$RUNC_ROOT"/*/; do
    [ -d "$root" ] || continue
    for id in $(runc --root "$root" list -q 2>/dev/null); do
      runc --root "$root" kill -a "$id" KILL 2>/dev/null
      runc --root "$root" delete -f "$id" 2>/dev/null
    done
  done
fi
# The shims serve only our containerd's socket: they are ours.
for proc in /proc/[0-9]*; do
  if tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -q -- "-address $CONTAINERD_SOCK "; then
    kill -KILL "${proc#/proc/}" 2>/dev/null
  fi
done
stop_pid containerd

# 3. Whatever still runs in the pods' cgroups (the kubelet's kubepods tree), then
# the cgroups themselves, deepest first.
for hierarchy in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
  [ -d "$hierarchy" ] || continue
  find "$hierarchy" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
done
sleep 0.2
for hierarchy in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
  [ -d "$hierarchy" ] && find "$hierarchy" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 4. Mounts under the state folder (overlay snapshots, volumes, secrets, netns
# bind mounts), deepest first; lazily if busy.
if [ -d "$STATE" ]; then
  state_real="$(realpath "$STATE")"
  awk '{print $5}' /proc/self/mountinfo | grep -E "^$state_real(/|$)" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
fi

# 5. kube-proxy's rules (its own cleanup first, then the sweep below catches the rest).
if [ -x "$BIN/kube-proxy" ]; then
  timeout 60 "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
fi
# Every KUBE-* chain (kubelet: KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT;
# kube-proxy: KUBE-SERVICES, KUBE-SVC-*, ...) and CNI-* chain, in every table, for
# both families and both iptables back ends: drop the jumps into them from any
# chain, then flush and delete them.
sweep() { # <iptables command> <iptables-save command>
  local ipt="$1" save="$2" table rule chain
  command -v "$ipt" >/dev/null && command -v "$save" >/dev/null || return 0
  for table in filter nat mangle raw; do
    "$save" -t "$table" >/dev/null 2>&1 || continue
    "$save" -t "$table" 2>/dev/null | grep -E '^-A [^ ]+ .*-j (KUBE-|CNI-)' | grep -vE '^-A (KUBE-|CNI-)' |
      while read -r rule; do
        eval "$ipt -w -t $table ${rule/#-A/-D}" 2>/dev/null
      done
    for chain in $("$save" -t "$table" 2>/dev/null | sed -n 's/^:\(\(KUBE-\|CNI-\)[^ ]*\) .*/\1/p'); do
      "$ipt" -w -t "$table" -F "$chain" 2>/dev/null
    done
    for chain in $("$save" -t "$table" 2>/dev/null | sed -n 's/^:\(\(KUBE-\|CNI-\)[^ ]*\) .*/\1/p'); do
      "$ipt" -w -t "$table" -X "$chain" 2>/dev/null
    done
  done
}
sweep iptables iptables-save
sweep ip6tables ip6tables-save
sweep iptables-legacy iptables-legacy-save
sweep ip6tables-legacy ip6tables-legacy-save
# kube-proxy of this release also keeps nftables tables named kube-proxy.
if command -v nft >/dev/null; then
  for family in ip ip6 inet; do nft delete table "$family" kube-proxy 2>/dev/null; done
fi

# 6. Network devices: the bridges (the pods' veths went with their namespaces).
for dev in "$POD_BRIDGE" "$NODE_BRIDGE"; do
  ip link show "$dev" >/dev/null 2>&1 && ip link delete "$dev" 2>/dev/null
done
if [ -f "$STATE/ip_forward.before" ]; then
  cat "$STATE/ip_forward.before" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
fi

# 7. The state itself.
if [ "${DLEDGER_E2E_KEEP_STATE:-0}" != 1 ] && [ -d "$STATE" ]; then
  rm -rf "$STATE" 2>/dev/null || {
    log "warning: could not remove all of $STATE (still mounted?)"
  }
fi

# Check the one thing that would silently break later loopback tests.
left="$( (iptables-save 2>/dev/null; ip6tables-save 2>/dev/null) | grep -E '^:?(-A )?[^ ]*KUBE-' || true)"
if [ -n "$left" ]; then
  log "error: Kubernetes iptables rules remain:"
  echo "$left" >&2
  exit 1
fi
log "cluster down"
