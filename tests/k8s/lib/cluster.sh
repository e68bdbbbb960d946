# shellcheck shell=bash
# The control plane on loopback: etcd, kube-apiserver (TLS with generated certificates, Node and RBAC
# authorizers, the default admission plugins plus NodeRestriction and
# OwnerReferencesPermissionEnforcement), kube-controller-manager (each controller with its own
# ServiceAccount, as kubeadm runs it), kube-scheduler, and kwok with a few simulated nodes whose pod
# CIDRs lie inside 127.0.0.0/8.
#
# Sourced by control-plane.sh. Needs: RUN, K8S_BIN, KUBECTL, KWOK_MODULE_DIR, log, die, start_bg.
# Sets: KUBECONFIG (admin), API_URL, CA_CRT.

# Node i gets PREFIX.i.0/24: every pod IP is a loopback address. Two runs at once need two prefixes.
POD_CIDR_PREFIX=${K8S_POD_CIDR_PREFIX:-127.20}
SERVICE_CIDR=127.96.0.0/16     # ClusterIPs are virtual: nothing listens on them
FAKE_NODES=${FAKE_NODES:-3}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- certificates ------------------------------------------------------------------------------

# cert NAME CN [O] [SAN]: a key and a certificate signed by the test CA.
cert() {
  local name=$1 cn=$2 org=${3:-} san=${4:-} pki=$RUN/pki subj
  subj="/CN=$cn${org:+/O=$org}"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subj" \
    -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}

make_pki() {
  local pki=$RUN/pki
  mkdir -p "$pki"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -subj "/CN=rcluster-test-ca" \
    -days 2 -sha256 -out "$pki/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:${SERVICE_CIDR%.0/16}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  # kwok updates the status of every simulated node and pod: it acts for all of them.
  cert kwok kwok-controller system:masters
  # ServiceAccount tokens are signed with this key pair.
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  CA_CRT=$pki/ca.crt
}

# kubeconfig_cert FILE NAME: client-certificate kubeconfig for the generated NAME.crt.
kubeconfig_cert() {
  local file=$1 name=$2
  "$KUBECTL" config set-cluster test --server="$API_URL" --certificate-authority="$CA_CRT" \
    --embed-certs --kubeconfig="$file" >/dev/null
  "$KUBECTL" config set-credentials "$name" --client-certificate="$RUN/pki/$name.crt" \
    --client-key="$RUN/pki/$name.key" --embed-certs --kubeconfig="$file" >/dev/null
  "$KUBECTL" config set-context test --cluster=test --user="$name" --kubeconfig="$file" >/dev/null
  "$KUBECTL" config use-context test --kubeconfig="$file" >/dev/null
}

# kubeconfig_token FILE TOKEN [NAMESPACE]: kubeconfig authenticating with a bearer token.
kubeconfig_token() {
  local file=$1 token=$2 ns=${3:-default}
  "$KUBECTL" config set-cluster test --server="$API_URL" --certificate-authority="$CA_CRT" \
    --embed-certs --kubeconfig="$file" >/dev/null
  "$KUBECTL" config set-credentials sa --token="$token" --kubeconfig="$file" >/dev/null
  "$KUBECTL" config set-context test --cluster=test --user=sa --namespace="$ns" --kubeconfig="$file" >/dev/null
  "$KUBECTL" config use-context test --kubeconfig="$file" >/dev/null
}

# --- processes ---------------------------------------------------------------------------------

start_etcd() {
  local client peer
  client=$(free_port) peer=$(free_port)
  ETCD_URL=http://127.0.0.1:$client
  start_bg etcd "$K8S_BIN/etcd" --name test --data-dir "$RUN/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "test=http://127.0.0.1:$peer" --listen-metrics-urls "" \
    --unsafe-no-fsync --quota-backend-bytes 1073741824
  wait_until 60 "etcd is healthy" curl -sf --max-time 2 "$ETCD_URL/health"
}

# Every request of the operators' ServiceAccounts (namespace rcluster-system) is logged with its
# response code: a verb missing from the chart's RBAC shows up as a 403 there.
audit_policy() {
  cat >"$RUN/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:rcluster-system"]
  - level: None
EOF
}

start_apiserver() {
  local port pki=$RUN/pki
  port=$(free_port)
  audit_policy
  API_URL=https://127.0.0.1:$port
  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "$ETCD_URL" --bind-address 127.0.0.1 --secure-port "$port" \
    --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,OwnerReferencesPermissionEnforcement \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --audit-policy-file "$RUN/audit-policy.yaml" --audit-log-path "$RUN/logs/audit.log" \
    --audit-log-format json --audit-log-mode blocking \
    --allow-privileged=false --profiling=false
  kubeconfig_cert "$RUN/admin.kubeconfig" admin
  export KUBECONFIG=$RUN/admin.kubeconfig
  wait_until 120 "the API server is ready" "$KUBECTL" get --raw /readyz
  # RBAC's bootstrap roles are written by a post-start hook; /readyz waits for it.
  log "kube-apiserver $("$KUBECTL" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') on $API_URL"
}

start_controller_manager() {
  kubeconfig_cert "$RUN/controller-manager.kubeconfig" controller-manager
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --secure-port 0 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$RUN/pki/sa.key" --root-ca-file "$RUN/pki/ca.crt" \
    --controllers '*' --concurrent-statefulset-syncs 5
  # The token controller's work is visible: every namespace gets its ServiceAccount.
  wait_until 60 "the ServiceAccount controller made default/default" \
    "$KUBECTL" get serviceaccount default -n default
}

start_scheduler() {
  kubeconfig_cert "$RUN/scheduler.kubeconfig" scheduler
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN/scheduler.kubeconfig" \
    --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
    --secure-port 0 --leader-elect=false
}

# kwok's configuration: the stages a simulated node and pod go through, from the kwok module itself
# (the same files kwokctl uses): nodes initialise and heartbeat through Leases; pods get an IP from
# their node's podCIDR and become Ready. Not kwok's pod-complete and pod-delete stages: the test
# kubelet ends a Job's pod when its process exits, and removes a deleted pod once its process has
# stopped (kwok would do both at once, before anything ran or stopped).
kwok_config() {
  local stages=$KWOK_MODULE_DIR/kustomize/stage f
  for f in "$stages"/node/fast/node-initialize.yaml "$stages"/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$stages"/pod/fast/pod-ready.yaml; do
    echo "---"
    cat "$f"
  done >"$RUN/kwok.yaml"
}

start_kwok() {
  kubeconfig_cert "$RUN/kwok.kubeconfig" kwok
  kwok_config
  start_bg kwok "$K8S_BIN/kwok" --kubeconfig "$RUN/kwok.kubeconfig" --config "$RUN/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --cidr "$POD_CIDR_PREFIX.250.0/24" --node-lease-duration-seconds 40
  local i
  for ((i = 0; i < FAKE_NODES; i++)); do
    "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: zone-$i
    type: kwok
spec:
  podCIDR: $POD_CIDR_PREFIX.$i.0/24
  podCIDRs: [$POD_CIDR_PREFIX.$i.0/24]
EOF
  done
  wait_until 60 "$FAKE_NODES kwok nodes are Ready" \
    "$KUBECTL" wait node -l type=kwok --for condition=Ready --timeout 5s
}

# Static PersistentVolumes (hostPath folders under the run folder) that the PV controller binds to
# the StatefulSet's claims: the node process of a pod uses the folder of its claim's volume, so a
# pod created again for the same claim finds its data.
make_volumes() {
  local n=$1 i
  for ((i = 0; i < n; i++)); do
    mkdir -p "$RUN/volumes/pv-$i"
    "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-$i
  labels: {type: local-test}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $RUN/volumes/pv-$i, type: Directory}
EOF
  done
}

start_control_plane() {
  make_pki
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_kwok
  # quorum-3 keeps 4 claims, sharded-2x3 6 and 3 more while it runs a third shard, async-cache-2
  # 2 (claims are retained; a volume whose claim was deleted is not used again).
  make_volumes 17
}
