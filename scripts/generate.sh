#!/usr/bin/env bash
# Regenerates every file the operator's code is the source of: the CRD (top
# level and the chart's copy) and the chart's RBAC rules. CI fails when the
# committed files differ from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p dledger-operator
op=target/release/dledger-operator
chart=charts/dledger-operator
mkdir -p crds "$chart/crds" "$chart/files"
"$op" crd >crds/dledger.io_dledgergroups.yaml
cp crds/dledger.io_dledgergroups.yaml "$chart/crds/"
"$op" rbac --rules-only >"$chart/files/clusterrole-rules.yaml"
"$op" rbac --lease-rules-only >"$chart/files/lease-rules.yaml"
echo "generated: crds/, $chart/crds/, $chart/files/"
