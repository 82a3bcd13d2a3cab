#!/usr/bin/env bash
# Checks the Helm chart: its CRDs and RBAC rules are the operator's own output
# (no drift), `helm lint` passes, and what `helm template` renders — with the
# defaults and with every optional part on — is valid against the Kubernetes
# 1.36 schemas (offline, the PyPI package kubernetes-validate).
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/dledger-operator
operator=target/release/dledger-operator
[ -x "$operator" ] || cargo build --release -q -p dledger-operator

echo "-- generated files are current"
"$operator" crd | diff -u "$chart/crds/dledger.io_dledgergroups.yaml" - \
  || { echo "$chart/crds drifted from 'dledger-operator crd': run scripts/generate.sh" >&2; exit 1; }
diff -u crds/dledger.io_dledgergroups.yaml "$chart/crds/dledger.io_dledgergroups.yaml" \
  || { echo "$chart/crds differs from crds/: run scripts/generate.sh" >&2; exit 1; }
"$operator" rbac --rules-only | diff -u "$chart/files/clusterrole-rules.yaml" - \
  || { echo "$chart/files/clusterrole-rules.yaml drifted from 'dledger-operator rbac': run scripts/generate.sh" >&2; exit 1; }
"$operator" rbac --lease-rules-only | diff -u "$chart/files/lease-rules.yaml" - \
  || { echo "$chart/files/lease-rules.yaml drifted from 'dledger-operator rbac': run scripts/generate.sh" >&2; exit 1; }

echo "-- helm lint"
bash scripts/helm.sh lint --strict "$chart"
bash scripts/helm.sh lint --strict "$chart" --set replicaCount=2 --set networkPolicy.enabled=true \
  --set metrics.serviceMonitor.enabled=true
if bash scripts/helm.sh lint "$chart" --set replicaCount=0 >/dev/null 2>&1; then
  echo "values.schema.json accepted replicaCount=0" >&2
  exit 1
fi

echo "-- helm template, validated against Kubernetes 1.36"
command -v kubernetes-validate >/dev/null || pip install -q kubernetes-validate==1.37.0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bash scripts/helm.sh template dledger "$chart" --namespace dledger-system --include-crds >"$out/default.yaml"
bash scripts/helm.sh template dledger "$chart" --namespace dledger-system --set replicaCount=2 \
  --set networkPolicy.enabled=true >"$out/all.yaml"
kubernetes-validate --strict -k 1.36.0 --quiet "$out/default.yaml" "$out/all.yaml"
echo "rendered:"
grep -h '^kind:' "$out/default.yaml" "$out/all.yaml" | sort | uniq -c
