#!/usr/bin/env bash
# Installs the Debian packages of the one-node test cluster: the container runtime
# (containerd, runc), the CNI plugins, the networking tools the kubelet and
# kube-proxy call (iptables, conntrack, ethtool, socat), the image tools
# (umoci, skopeo) and busybox-static (the shell in the storage helper image).
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack ethtool socat
  iproute2 util-linux mount kmod openssl umoci skopeo busybox-static curl gcc libc6-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[deps] installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The Debian containerd unit would start on install on a systemd machine; up.sh
# runs its own containerd with its own config, so a packaged one is not used.
