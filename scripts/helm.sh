#!/usr/bin/env bash
# Runs the project's pinned Helm, building it from its Go module on first use
# (about 2 minutes) into the same cache as the test cluster's binaries.
#   scripts/helm.sh lint charts/dledger-operator
set -euo pipefail
version=v4.3.1
cache=${DLEDGER_E2E_CACHE:-$HOME/.cache/dledger-e2e}
bin=$cache/helm-$version/helm
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "helm.sh: go is needed to build Helm $version" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building Helm $version from its Go module (once; cached in $cache)" >&2
  (
    cd "$work"
    go mod init helm-build >/dev/null 2>&1
    GOFLAGS=-mod=mod go get "helm.sh/helm/v4/cmd/helm@$version" >&2
    mkdir -p "$(dirname "$bin")"
    # The version variables Helm's own Makefile sets.
    go build -trimpath -o "$bin.tmp" \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
      helm.sh/helm/v4/cmd/helm >&2
    mv "$bin.tmp" "$bin"
  )
fi
exec "$bin" "$@"
