#!/usr/bin/env bash
# The Kubernetes suite's one entry point, the same on every cluster:
#
#   KUBECONFIG=... DLEDGER_REPLICA_IMAGE=... DLEDGER_REPLICA_IMAGE_V2=... \
#   DLEDGER_REPLICA_VERSION=... DLEDGER_REPLICA_VERSION_V2=... \
#   DLEDGER_OPERATOR_IMAGE=... e2e/kubernetes/run.sh [test filter]
#
# DLEDGER_REPLICA_IMAGE_V2 is a second replica image that the upgrade
# scenario rolls the group to and back; the two VERSION variables are what
# each image's replica reports in /status (build one with
# DLEDGER_BUILD_VERSION set, as scripts/test-kubernetes.sh does), and the
# scenario waits until every member reports the one it rolled to.
#
# Runs `cargo test --release -p dledger-e2e --test kubernetes -- --ignored
# --test-threads=1 --nocapture` (the scenarios are #[ignore]d so that
# `cargo test --workspace` leaves them alone). A missing variable fails here,
# before any build, and again in each scenario that needs it: never a skip.
# kubectl comes from DLEDGER_KUBECTL, else the test cluster's cache, else PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for var in KUBECONFIG DLEDGER_REPLICA_IMAGE DLEDGER_REPLICA_IMAGE_V2 DLEDGER_REPLICA_VERSION \
  DLEDGER_REPLICA_VERSION_V2 DLEDGER_OPERATOR_IMAGE; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "e2e/kubernetes/run.sh: ${missing[*]} not set (see the header of this script;" \
    "on this machine: e2e/cluster/up.sh, e2e/cluster/image.sh)" >&2
  exit 1
fi
if [ -z "${DLEDGER_KUBECTL:-}" ]; then
  cached="${DLEDGER_E2E_CACHE:-$HOME/.cache/dledger-e2e}/bin/kubectl"
  if [ -x "$cached" ]; then DLEDGER_KUBECTL="$cached"; else DLEDGER_KUBECTL=kubectl; fi
fi
export DLEDGER_KUBECTL
# Helm for the chart scenario: the pinned build unless the caller names one.
export DLEDGER_HELM="${DLEDGER_HELM:-$PWD/scripts/helm.sh}"
"$DLEDGER_KUBECTL" version >&2
exec cargo test --release -p dledger-e2e --test kubernetes -- --ignored --test-threads=1 --nocapture "$@"
