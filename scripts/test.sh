#!/usr/bin/env bash
# The project's test command (README quick start; .ci/run calls it too).
#   1. the cargo tests: unit, deterministic simulation (thousands of seeds,
#      hence release mode), processes on loopback, hosts in network namespaces;
#      and bench/ceiling's own;
#   2. the Helm chart: lint, render, validate against Kubernetes 1.36, no drift
#      from the operator's CRD and RBAC;
#   3. the Kubernetes suite on this machine's own one-node cluster
#      (e2e/cluster; the first run builds it from source, later runs reuse it).
# Needs root (network namespaces, the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# A cluster left by a crashed run leaves kubelet rules that drop loopback
# traffic from other sources: clear them before the loopback tests.
bash e2e/cluster/down.sh
cargo test --workspace --release
# The comparison's bound (bench/ceiling) is its own crate, outside the workspace.
cargo test --manifest-path bench/ceiling/Cargo.toml --release --target-dir bench/.cache/ceiling
bash scripts/check-chart.sh
bash scripts/test-kubernetes.sh
