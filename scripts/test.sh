#!/usr/bin/env bash
# The project's test command (README quick start; .ci/run calls it too).
# Release mode: the deterministic simulation runs thousands of seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
