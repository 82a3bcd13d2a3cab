#!/usr/bin/env bash
# The Kubernetes suite on a kind cluster (wherever Docker and kind run; not on
# the project's own test machine, which has no Docker engine — there the same
# suite runs on e2e/cluster).
#
#   e2e/kind/run.sh [--node-image kindest/node:vX.Y.Z@sha256:...] [--keep]
#
# Creates a cluster, builds both images with the Dockerfile, loads them into
# the nodes, runs the suite's one entry point (whose scenarios install the
# operator themselves, one through the Helm chart), collects logs on failure,
# and deletes
# the cluster unless --keep is given.
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster=${KIND_CLUSTER_NAME:-dledger-e2e}
node_image=""
keep=false
while [ $# -gt 0 ]; do
  case "$1" in
    --node-image) node_image=$2; shift 2 ;;
    --keep) keep=true; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || { echo "kind suite: $tool not found on PATH" >&2; exit 1; }
done

tag=${IMAGE_TAG:-e2e-$(git rev-parse --short HEAD)}
replica_image="localhost/dledger-replica:$tag"
operator_image="localhost/dledger-operator:$tag"
# The upgrade scenario rolls the group from one image to another: the same
# build under a second tag is a new pod template, so a real rolling upgrade.
replica_image_v2="localhost/dledger-replica:$tag-v2"
logs_dir=${KIND_LOGS_DIR:-target/kind-logs}
kubeconfig=$(mktemp)

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "== suite failed ($status): collecting logs into $logs_dir"
    mkdir -p "$logs_dir"
    kind export logs "$logs_dir" --name "$cluster" >/dev/null 2>&1 || true
    KUBECONFIG=$kubeconfig kubectl get all,dlg,pvc,events -A -o wide >"$logs_dir/resources.txt" 2>&1 || true
  fi
  if ! $keep; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
  rm -f "$kubeconfig"
  exit "$status"
}
trap cleanup EXIT

echo "== kind cluster $cluster ${node_image:+($node_image)}"
kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
kind create cluster --name "$cluster" ${node_image:+--image "$node_image"} --wait 180s
kind get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG=$kubeconfig
kubectl version

echo "== images ($tag)"
docker build --target replica --build-arg VERSION="$tag" -t "$replica_image" .
docker build --target operator --build-arg VERSION="$tag" -t "$operator_image" .
docker tag "$replica_image" "$replica_image_v2"
kind load docker-image "$replica_image" "$replica_image_v2" "$operator_image" --name "$cluster"

echo "== suite"
DLEDGER_REPLICA_IMAGE=$replica_image DLEDGER_REPLICA_IMAGE_V2=$replica_image_v2 DLEDGER_OPERATOR_IMAGE=$operator_image \
  DLEDGER_HELM=helm bash e2e/kubernetes/run.sh
