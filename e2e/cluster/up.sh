#!/usr/bin/env bash
# Brings up the one-node Kubernetes test cluster on this machine (see README.md):
# builds what is missing (cached), removes the leftovers of a previous run, then
# starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
# the kubelet, kube-proxy, CoreDNS and local-path-provisioner, and waits until the
# node is Ready, DNS answers and a PVC binds. Idempotent: an earlier cluster is
# torn down first. The last line of stdout is KUBECONFIG=<path>.
# Needs root. State goes to ${DLEDGER_E2E_STATE:-/var/lib/dledger-e2e}.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
[ "$(id -u)" -eq 0 ] || die "up.sh needs root (network devices, iptables, mounts)"
T0=$(date +%s.%N)
exec 3>&2 # the waits below silence their probes; what explains a failure goes here
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

"$HERE/deps.sh"
"$HERE/build.sh" all
"$HERE/down.sh" >/dev/null
mkdir -p "$STATE" "$PKI" "$LOGS" "$PIDS"
export PATH="$BIN:$PATH"

log "versions:"
{
  echo "  kubernetes  $("$BIN/kube-apiserver" --version 2>&1)"
  echo "  kubelet     $("$BIN/kubelet" --version 2>&1)"
  echo "  kubectl     $("$BIN/kubectl" version --client 2>&1 | head -1)"
  echo "  etcd        $("$BIN/etcd" --version 2>&1 | head -1)"
  echo "  coredns     $("$BIN/coredns" -version 2>&1 | head -1)"
  echo "  local-path  $(cat "$BIN/local-path-provisioner.version")"
  echo "  containerd  $(containerd --version 2>&1)"
  echo "  runc        $(runc --version 2>&1 | head -1)"
  echo "  cni         $(dpkg-query -W -f='${Version}' containernetworking-plugins)"
  echo "  iptables    $(iptables --version 2>&1)"
} >&2

# ---------------------------------------------------------------- certificates
# One CA signs everything; each component gets its own client certificate, so the
# Node and RBAC authorizers see real identities.
openssl_quiet() { openssl "$@" 2>/dev/null; }
# ECDSA P-256 keys: generating a dozen RSA keys takes seconds on a busy machine.
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj "/CN=dledger-e2e-ca" \
  -keyout "$PKI/ca.key" -out "$PKI/ca.crt"
openssl_quiet genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$PKI/sa.key"
openssl_quiet pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
# cert <name> <subject> <extendedKeyUsage> [subjectAltName]
cert() {
  local name="$1" subject="$2" usage="$3" san="${4:-}"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
  } >"$PKI/$name.ext"
  openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" -keyout "$PKI/$name.key" -out "$PKI/$name.csr"
  openssl_quiet x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
cert etcd "/CN=dledger-e2e-etcd" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP"
cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=dledger-e2e-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert coredns "/CN=dledger-e2e-coredns" clientAuth
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
chmod 600 "$PKI"/*.key

kubeconfig() { # <file> <cert name>
  cat >"$1" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: dledger-e2e
  cluster:
    server: $APISERVER_URL
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: dledger-e2e
  context: {cluster: dledger-e2e, user: $2}
current-context: dledger-e2e
YAML
}
kubeconfig "$ADMIN_KUBECONFIG" admin
for c in controller-manager scheduler kube-proxy coredns kubelet-client; do kubeconfig "$STATE/$c.kubeconfig" "$c"; done

# ---------------------------------------------------------------- network
# The node's address lives on a bridge with no ports (the kernel has no dummy link).
echo "$(cat /proc/sys/net/ipv4/ip_forward)" >"$STATE/ip_forward.before"
ip link add "$NODE_BRIDGE" type bridge
ip addr add "$NODE_IP/$NODE_PREFIX" dev "$NODE_BRIDGE"
ip link set "$NODE_BRIDGE" up
echo 1 >/proc/sys/net/ipv4/ip_forward
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
fi
mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
cat >"$STATE/cni/net.d/10-dledger-e2e.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "dledger-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
JSON

# start <name> <command...>: runs it in its own session, logs to $LOGS/<name>.log,
# records its pid for down.sh.
start() {
  local name="$1"
  shift
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}
# wait_for <what> <seconds> <command...>
wait_for() {
  local what="$1" seconds="$2" deadline
  shift 2
  deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${seconds}s waiting for $what; last log lines:"
      tail -n 30 "$LOGS"/*.log >&2 || true
      "$@" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "$what ready ($(elapsed)s)"
}
alive() { kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null || { log "$1 exited:" 2>&3; tail -n 30 "$LOGS/$1.log" >&3; exit 1; }; }

# ---------------------------------------------------------------- etcd
start etcd "$BIN/etcd" --name dledger-e2e --data-dir "$STATE/etcd" \
  --listen-client-urls "$ETCD_CLIENT_URL" --advertise-client-urls "$ETCD_CLIENT_URL" \
  --listen-peer-urls "$ETCD_PEER_URL" --initial-advertise-peer-urls "$ETCD_PEER_URL" \
  --initial-cluster "dledger-e2e=$ETCD_PEER_URL" --listen-metrics-urls "" \
  --cert-file "$PKI/etcd.crt" --key-file "$PKI/etcd.key" --client-cert-auth --trusted-ca-file "$PKI/ca.crt" \
  --peer-cert-file "$PKI/etcd.crt" --peer-key-file "$PKI/etcd.key" --peer-client-cert-auth --peer-trusted-ca-file "$PKI/ca.crt" \
  --quota-backend-bytes 1073741824 --unsafe-no-fsync
etcd_healthy() {
  alive etcd
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/apiserver-etcd-client.crt" --key "$PKI/apiserver-etcd-client.key" \
    "$ETCD_CLIENT_URL/health" | grep -q '"health":"true"'
}
wait_for etcd 60 etcd_healthy

# ---------------------------------------------------------------- control plane
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "$ETCD_CLIENT_URL" --etcd-cafile "$PKI/ca.crt" \
  --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --allow-privileged=true --profiling=false --v=1
apiserver_ready() { alive kube-apiserver; kubectl --kubeconfig "$ADMIN_KUBECONFIG" get --raw /readyz; }
wait_for kube-apiserver 120 apiserver_ready
kubectl --kubeconfig "$ADMIN_KUBECONFIG" version >&2

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --use-service-account-credentials \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$CLUSTER_CIDR" \
  --leader-elect=false --profiling=false --v=1
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1

# ---------------------------------------------------------------- containerd
mkdir -p "$STATE/containerd"
cat >"$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = "$CONTAINERD_SOCK.debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Negative oom_score_adj is not permitted here; without this every sandbox
  # fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUNC_ROOT"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
start containerd containerd --config "$STATE/containerd/config.toml"
containerd_ready() { alive containerd; ctr_k8s version; }
wait_for containerd 60 containerd_ready

# The sandbox image: the pause binary from the Kubernetes module, statically linked.
rootfs="$(mktemp -d)"
install -D -m 0755 "$BIN/pause" "$rootfs/pause"
import_rootfs "$rootfs" "$PAUSE_IMAGE" 65535:65535 /pause ""
rm -rf "$rootfs"
# The provisioner's image also carries busybox: its helper pods need a shell
# (mkdir / rm of volume directories).
rootfs="$(mktemp -d)"
install -D -m 0755 "$BIN/local-path-provisioner" "$rootfs/usr/local/bin/local-path-provisioner"
install -D -m 0755 "$(command -v busybox)" "$rootfs/bin/busybox"
for applet in $(busybox --list); do [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"; done
mkdir -p "$rootfs/tmp" && chmod 1777 "$rootfs/tmp"
import_rootfs "$rootfs" "$LOCAL_PATH_IMAGE" 0:0 /usr/local/bin/local-path-provisioner ""
rm -rf "$rootfs"
log "pause and local-path images imported ($(elapsed)s)"

# ---------------------------------------------------------------- kubelet
mkdir -p "$STATE/kubelet"
echo "# pods use the cluster DNS only ($DNS_IP); no upstream is reachable from here" >"$STATE/resolv.conf"
cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This kernel mounts cgroup v1; containerd 1.6 from Debian drives it with cgroupfs.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDNS: [$DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $STATE/resolv.conf
failSwapOn: false
rotateCertificates: false
serverTLSBootstrap: false
# A shared test machine: never evict or collect images because its disk is busy.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
start kubelet "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" \
  --kubeconfig "$STATE/kubelet-client.kubeconfig" --root-dir "$STATE/kubelet" \
  --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1

# ---------------------------------------------------------------- kube-proxy
cat >"$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# Leave the machine's conntrack table size alone.
conntrack: {maxPerCore: 0}
iptables: {localhostNodePorts: false}
YAML
start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v=1

# ---------------------------------------------------------------- cluster objects
K=(kubectl --kubeconfig "$ADMIN_KUBECONFIG")
node_ready() {
  alive kubelet; alive kube-proxy; alive kube-controller-manager; alive kube-scheduler
  [ "$("${K[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for "node $NODE_NAME" 180 node_ready

"${K[@]}" apply -f - >/dev/null <<YAML
# CoreDNS runs on the host as dledger-e2e-coredns and reads Services, EndpointSlices,
# Pods and Namespaces (the kubernetes plugin's needs).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: dledger-e2e:coredns}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dledger-e2e:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dledger-e2e:coredns}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: dledger-e2e-coredns}
YAML

# ---------------------------------------------------------------- CoreDNS
cat >"$STATE/Corefile" <<COREFILE
.:53 {
  bind $DNS_IP
  errors
  kubernetes $CLUSTER_DOMAIN in-addr.arpa {
    kubeconfig $STATE/coredns.kubeconfig dledger-e2e
    pods insecure
    ttl 5
  }
}
COREFILE
start coredns "$BIN/coredns" -conf "$STATE/Corefile"
dns_answers() { alive coredns; busybox nslookup "kubernetes.default.svc.$CLUSTER_DOMAIN" "$DNS_IP" | grep -q "$KUBERNETES_SERVICE_IP"; }
wait_for "CoreDNS" 60 dns_answers

# ---------------------------------------------------------------- storage
sed -e "s#@IMAGE@#$LOCAL_PATH_IMAGE#g" -e "s#@DIR@#$STATE/local-path#g" \
  "$HERE/local-path-storage.yaml" | "${K[@]}" apply -f - >/dev/null
mkdir -p "$STATE/local-path"
pvc_binds() {
  "${K[@]}" -n local-path-storage get pvc dledger-e2e-probe -o jsonpath='{.status.phase}' | grep -qx Bound
}
"${K[@]}" -n local-path-storage apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: dledger-e2e-probe}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: dledger-e2e-probe}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: $LOCAL_PATH_IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo ok > /data/probe"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: dledger-e2e-probe}
YAML
probe_done() { "${K[@]}" -n local-path-storage get pod dledger-e2e-probe -o jsonpath='{.status.phase}' | grep -qx Succeeded; }
wait_for "a PVC bound by local-path-provisioner" 180 pvc_binds
wait_for "a pod writing to it" 120 probe_done
"${K[@]}" -n local-path-storage delete pod/dledger-e2e-probe pvc/dledger-e2e-probe --wait=false >/dev/null

log "cluster up in $(elapsed)s"
echo "KUBECONFIG=$ADMIN_KUBECONFIG"
