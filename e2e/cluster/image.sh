#!/usr/bin/env bash
# Builds the OCI image of a workspace binary without a Docker engine and imports
# it into the test cluster's containerd (namespace k8s.io):
#
#   e2e/cluster/image.sh replica|operator <tag>     # prints localhost/dledger-<component>:<tag>
#   e2e/cluster/image.sh --print-config replica|operator   # user, entrypoint, cmd
#
# The image has the layout, user and entrypoint of the Dockerfile's runtime stage:
# the binary at /usr/local/bin/dledger-<component>, user 65532:65532, entrypoint
# the binary (cmd "serve" for the replica, "run" for the operator), plus the
# shared libraries the binary links (glibc, libgcc_s, the loader), /etc/passwd
# and /etc/group naming the nonroot user, CA certificates and a /tmp.
# The binary is target/release/dledger-<component> (built with cargo if missing).
# Tags are parameters, so two versions can be loaded side by side. Needs the
# cluster up (containerd's socket) and root.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/../.." && pwd)"

# What the Dockerfile's runtime stage says, so the two cannot drift
# (e2e/tests/image_layout.rs reads the Dockerfile and compares).
image_config() { # <component>
  case "$1" in
    replica) cmd=serve ;;
    operator) cmd=run ;;
    *) die "unknown component '$1': replica or operator" ;;
  esac
  user=65532:65532
  binary_path="/usr/local/bin/dledger-$1"
}

if [ "${1:-}" = "--print-config" ] && [ $# -eq 2 ]; then
  image_config "$2"
  printf 'user=%s\nentrypoint=%s\ncmd=%s\n' "$user" "$binary_path" "$cmd"
  exit 0
fi
[ $# -eq 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
component="$1" tag="$2"
image_config "$component"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not a valid image tag"
[ -S "$CONTAINERD_SOCK" ] || die "no containerd at $CONTAINERD_SOCK: run e2e/cluster/up.sh first"

binary_name="dledger-$component"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
binary="$target_dir/release/$binary_name"
if [ ! -x "$binary" ]; then
  log "building $binary_name (release)"
  (cd "$ROOT" && cargo build --release -p "$binary_name" >&2)
fi
[ -x "$binary" ] || die "no $binary after cargo build"

ref="localhost/$binary_name:$tag"
rootfs="$(mktemp -d "${TMPDIR:-/tmp}/dledger-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
install -D -m 0755 "$binary" "$rootfs$binary_path"
# Every shared object the dynamic loader resolves for the binary, at its own path.
ldd "$binary" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
  real="$(readlink -f "$lib")"
  install -D -m 0755 "$real" "$rootfs$lib"
done
mkdir -p "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
version="$("$binary" --version 2>/dev/null | awk '{ print $NF }' || true)"
import_rootfs "$rootfs" "$ref" "$user" "$binary_path" "$cmd" \
  "org.opencontainers.image.title=$binary_name" \
  "org.opencontainers.image.version=${version:-$tag}" \
  "org.opencontainers.image.licenses=Apache-2.0"
log "imported $ref"
echo "$ref"
