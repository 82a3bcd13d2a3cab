# Shared by up.sh, down.sh and image.sh: where things live and the addresses of the
# one-node test cluster. Sourced, not run.
# shellcheck shell=bash
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$CLUSTER_DIR/versions.env"
CACHE="${DLEDGER_E2E_CACHE:-$HOME/.cache/dledger-e2e}"
BIN="$CACHE/bin"
STATE="${DLEDGER_E2E_STATE:-/var/lib/dledger-e2e}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"

# Every address is in the benchmarking range 198.18.0.0/15 (RFC 2544), none private.
NODE_NAME=dledger-e2e-node
NODE_BRIDGE=dle2e-node        # holds the node's address (the kubelet refuses loopback)
NODE_IP=198.19.0.1
NODE_PREFIX=24
POD_BRIDGE=dle2e-cni          # the CNI bridge
POD_SUBNET=198.18.0.0/24
POD_GATEWAY=198.18.0.1
CLUSTER_CIDR=198.18.0.0/16
SERVICE_CIDR=198.19.128.0/20
KUBERNETES_SERVICE_IP=198.19.128.1
DNS_IP=$NODE_IP               # CoreDNS runs on the host, bound to the node address
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT=6443
APISERVER_URL="https://$NODE_IP:$APISERVER_PORT"
ETCD_CLIENT_URL=https://127.0.0.1:23379
ETCD_PEER_URL=https://127.0.0.1:23380
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
RUNC_ROOT="$STATE/runc"
PAUSE_IMAGE="localhost/dledger-e2e-pause:$KUBERNETES_VERSION"
LOCAL_PATH_IMAGE="localhost/dledger-e2e-local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION"
ADMIN_KUBECONFIG="$STATE/admin.kubeconfig"

log() { echo "[$(basename "$0" .sh) $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# Builds an OCI image from a root filesystem folder and imports it into
# containerd's k8s.io namespace under <ref>. The config is user, entrypoint and
# cmd as given (cmd may be empty), plus the labels given as key=value.
# Usage: import_rootfs <rootfs> <ref> <user> <entrypoint> <cmd|""> [label=value...]
import_rootfs() {
  local rootfs="$1" ref="$2" user="$3" entrypoint="$4" cmd="$5"
  shift 5
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/dledger-image.XXXXXX")"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:image"
  umoci insert --image "$work/oci:image" "$rootfs" / >/dev/null
  local args=(--config.user "$user" --config.entrypoint "$entrypoint" --config.workingdir /)
  [ -n "$cmd" ] && args+=(--config.cmd "$cmd")
  local label
  for label in "$@"; do args+=(--config.label "$label"); done
  umoci config --image "$work/oci:image" "${args[@]}"
  umoci gc --layout "$work/oci"
  skopeo copy --quiet "oci:$work/oci:image" "oci-archive:$work/image.tar:$ref" >/dev/null
  # Right after containerd starts, an import can end without the image being
  # listed; try again before giving up. No `grep -q` on the listing: it exits
  # at the first match, ctr dies of SIGPIPE and pipefail calls a listed
  # image missing (that, not containerd, was the "not found" seen here).
  local attempt out
  for attempt in 1 2 3 4 5 6; do
    out="$(ctr_k8s images import "$work/image.tar" 2>&1)" || true
    ctr_k8s images ls -q | grep -xF "$ref" >/dev/null && break
    log "image $ref not listed after import $attempt of 6 (ctr said: ${out:-nothing}); retrying"
    sleep "$attempt"
  done
  rm -rf "$work"
  ctr_k8s images ls -q | grep -xF "$ref" >/dev/null || die "image $ref not found in containerd after import"
}
