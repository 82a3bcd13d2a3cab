#!/usr/bin/env bash
# Builds the Go parts of the one-node test cluster into the cache
# (${DLEDGER_E2E_CACHE:-$HOME/.cache/dledger-e2e}/bin), from the Go module proxy only:
# the Kubernetes binaries, etcd, CoreDNS, local-path-provisioner and the pause binary.
# Each part carries a version stamp (<name>.version); a part whose stamp matches is
# not rebuilt, so a warm call takes well under a second. Debian packages are
# installed by deps.sh, not here.
# Usage: build.sh [all|kubernetes|etcd|coredns|local-path|pause]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${DLEDGER_E2E_CACHE:-$HOME/.cache/dledger-e2e}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
log() { echo "[build] $*" >&2; }

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# True when every named binary exists and carries the given stamp.
is_built() { # stamp name...
  local stamp="$1" name
  shift
  for name in "$@"; do
    [ -x "$BIN/$name" ] && [ "$(cat "$BIN/$name.version" 2>/dev/null)" = "$stamp" ] || return 1
  done
}
stamp() { # stamp name...
  local stamp="$1" name
  shift
  for name in "$@"; do echo "$stamp" >"$BIN/$name.version"; done
}

# A fresh throw-away module that requires <module>@<version>, so that the module's
# own replace directives (Kubernetes and etcd have them) do not apply.
throwaway_module() { # dir module version
  local dir="$1" module="$2" version="$3"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init "dledger-e2e-build/$(basename "$dir")" >/dev/null 2>&1 \
    && go mod edit -require="$module@$version")
}

build_kubernetes() {
  local stamp="$KUBERNETES_VERSION" lock
  if is_built "$stamp" "${KUBE_BINARIES[@]}"; then return 0; fi
  exec {lock}>"$CACHE/build-kubernetes.lock"
  flock "$lock"
  if is_built "$stamp" "${KUBE_BINARIES[@]}"; then return 0; fi
  log "building Kubernetes $KUBERNETES_VERSION (${KUBE_BINARIES[*]}); about 10 minutes cold"
  local dir="$CACHE/build-kubernetes"
  throwaway_module "$dir" k8s.io/kubernetes "$KUBERNETES_VERSION"
  # k8s.io/kubernetes' go.mod points every k8s.io/* staging module at ./staging;
  # the same modules are published as v0.<minor>.<patch>: replace each with that.
  local gomod staging
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  [ -f "$gomod" ] || { log "no go.mod downloaded for k8s.io/kubernetes@$KUBERNETES_VERSION"; return 1; }
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#\1#p' "$gomod")"
  [ -n "$staging" ] || { log "no staging replaces found in $gomod"; return 1; }
  local m args=()
  for m in $staging; do args+=("-replace=$m=$m@$KUBERNETES_STAGING_VERSION"); done
  (cd "$dir" && go mod edit "${args[@]}")
  local pkgs=() name
  for name in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$name@$KUBERNETES_VERSION"); done
  # go get resolves the packages' whole import graph (through the replaces above).
  (cd "$dir" && go get "${pkgs[@]}" >/dev/null)
  pkgs=("${pkgs[@]%@*}")
  # The version ldflags hack/lib/version.sh sets, so /version says the release.
  local major minor date ldflags=() pkg
  major="$(echo "$KUBERNETES_VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')"
  minor="$(echo "$KUBERNETES_VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')"
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=("-X '$pkg.gitVersion=$KUBERNETES_VERSION'" "-X '$pkg.gitMajor=$major'"
      "-X '$pkg.gitMinor=$minor'" "-X '$pkg.gitTreeState=clean'"
      "-X '$pkg.gitCommit=module-$KUBERNETES_VERSION'" "-X '$pkg.buildDate=$date'")
  done
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w ${ldflags[*]}" \
    -o "$BIN/" "${pkgs[@]}")
  stamp "$stamp" "${KUBE_BINARIES[@]}"
}

build_go_main() { # name module version package
  local name="$1" module="$2" version="$3" pkg="$4" dir="$CACHE/build-$1" lock
  if is_built "$version" "$name"; then return 0; fi
  # Two build.sh runs (up.sh and a hand-started one) build each part once.
  exec {lock}>"$CACHE/build-$name.lock"
  flock "$lock"
  if is_built "$version" "$name"; then return 0; fi
  log "building $name $version from $module"
  throwaway_module "$dir" "$module" "$version"
  (cd "$dir" && go get "$module@$version" >/dev/null \
    && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$BIN/$name" "$pkg")
  stamp "$version" "$name"
}

build_etcd() {
  build_go_main etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
}
build_coredns() {
  build_go_main coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
}
build_local_path() {
  build_go_main local-path-provisioner github.com/rancher/local-path-provisioner \
    "$LOCAL_PATH_PROVISIONER_VERSION" github.com/rancher/local-path-provisioner
}

# The sandbox ("pause") binary, from the C source that ships in the Kubernetes
# module, linked statically so the image needs nothing else.
build_pause() {
  local stamp="$KUBERNETES_VERSION"
  if is_built "$stamp" pause; then return 0; fi
  log "building pause from k8s.io/kubernetes@$KUBERNETES_VERSION build/pause/linux/pause.c"
  local src
  src="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [ -f "$src/build/pause/linux/pause.c" ] || { log "no pause.c under $src"; return 1; }
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$BIN/pause" "$src/build/pause/linux/pause.c"
  stamp "$stamp" pause
}

what="${1:-all}"
case "$what" in
  all) build_pause; build_kubernetes; build_etcd; build_coredns; build_local_path ;;
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  coredns) build_coredns ;;
  local-path) build_local_path ;;
  pause) build_pause ;;
  *) echo "usage: build.sh [all|kubernetes|etcd|coredns|local-path|pause]" >&2; exit 2 ;;
esac
