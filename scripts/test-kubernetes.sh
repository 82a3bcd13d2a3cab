#!/usr/bin/env bash
# The Kubernetes suite on this machine's own one-node cluster (e2e/cluster):
# up -> images -> suite -> down, holding the machine's cluster lock throughout,
# and down.sh again on any exit so no kubelet or kube-proxy rule outlives it.
# Needs root. The operator image is built when target/release/dledger-operator
# exists or the workspace has the dledger-operator package; otherwise
# DLEDGER_OPERATOR_IMAGE must be given.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK="${DLEDGER_E2E_LOCK:-/tmp/dledger-e2e-cluster.lock}"

if [ "${DLEDGER_E2E_LOCKED:-}" != 1 ]; then
  # One cluster per machine: wait (up to an hour) for anyone else's run to end.
  exec env DLEDGER_E2E_LOCKED=1 flock -w 3600 "$LOCK" "$0" "$@"
fi

trap 'e2e/cluster/down.sh' EXIT
e2e/cluster/down.sh
kubeconfig_line="$(e2e/cluster/up.sh | tail -n 1)"
export "${kubeconfig_line?}"
[ -n "${KUBECONFIG:-}" ] || { echo "up.sh printed no KUBECONFIG" >&2; exit 1; }

tag="e2e-$(git rev-parse --short HEAD 2>/dev/null || echo local)"
# The upgrade scenario's second version: the same sources built to report
# another version (DLEDGER_BUILD_VERSION relinks only the binary), so the
# suite can tell from /status which version each member really runs. Built
# first: image.sh copies target/release/dledger-replica as it finds it.
base_version="$(cargo pkgid -p dledger-replica | sed 's/.*[#@]//')"
DLEDGER_REPLICA_VERSION="$base_version"
DLEDGER_REPLICA_VERSION_V2="$base_version+e2e-v2"
DLEDGER_BUILD_VERSION="$DLEDGER_REPLICA_VERSION_V2" cargo build --release -p dledger-replica
DLEDGER_REPLICA_IMAGE_V2="$(e2e/cluster/image.sh replica "$tag-v2")"
cargo build --release -p dledger-replica
DLEDGER_REPLICA_IMAGE="$(e2e/cluster/image.sh replica "$tag")"
export DLEDGER_REPLICA_IMAGE DLEDGER_REPLICA_IMAGE_V2 DLEDGER_REPLICA_VERSION DLEDGER_REPLICA_VERSION_V2
if [ -z "${DLEDGER_OPERATOR_IMAGE:-}" ]; then
  if cargo metadata --no-deps --format-version 1 2>/dev/null | grep '"name":"dledger-operator"' >/dev/null; then
    cargo build --release -p dledger-operator
    DLEDGER_OPERATOR_IMAGE="$(e2e/cluster/image.sh operator "$tag")"
  else
    # No operator in this workspace yet: nothing reads the variable, but the
    # entry point requires it.
    DLEDGER_OPERATOR_IMAGE="localhost/dledger-operator:not-built"
  fi
fi
export DLEDGER_OPERATOR_IMAGE
bash e2e/kubernetes/run.sh "$@"
