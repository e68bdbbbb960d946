# shellcheck shell=bash
# The secure-3 step: manifests/examples/secure-3.yaml, which says nothing about TLS or tokens, under
# the Helm-installed operator: both are on by default. On the real API server: status.security
# records the decision, `kubectl get rcl` answers; the CA, node certificate and tokens Secrets are
# made, server-side applied and owned by the cluster; the pods run https only, verified against
# the generated CA under the pods' headless DNS names (which the test kubelet writes into
# /etc/hosts); a write with the write token is acknowledged, no token gets 401, the read token
# gets 403 on a write, plain http is refused; and after `kubectl delete pod` of the primary a write
# over https is acknowledged by the new primary.

SEC_NS=vault
SEC_CL=secure # metadata.name in manifests/examples/secure-3.yaml

sec_field() { "$KUBECTL" get rcl "$SEC_CL" -n "$SEC_NS" -o jsonpath="{$1}"; }
sec_url() { echo "https://$1.$SEC_CL-headless.$SEC_NS.svc:7000"; }

# sec_secret NAME KEY: one decoded value of a Secret.
sec_secret() {
  "$KUBECTL" get secret "$1" -n "$SEC_NS" -o json |
    python3 -c 'import base64, json, sys; sys.stdout.write(base64.b64decode(json.load(sys.stdin)["data"][sys.argv[1]]).decode())' "$2"
}

# sec_put POD KEY TOKEN: prints the HTTP status of an https write (000: no answer).
sec_put() {
  local auth=()
  [[ -n $3 ]] && auth=(-H "Authorization: Bearer $3")
  curl -s -o "$RUN/secure-put.out" -w '%{http_code}' --max-time 5 --cacert "$RUN/secure-ca.crt" \
    -X PUT -H 'Content-Type: application/json' "${auth[@]}" --data '{"v":1}' \
    "$(sec_url "$1")/v1/kv/$2?ack=quorum" || true
}

# Volumes of its own, pre-bound to its claims, so the steps after it find the ones they count on
# (claims are retained when a cluster is deleted).
sec_volumes() {
  local i
  for i in 0 1 2; do
    mkdir -p "$RUN/volumes/pv-secure-$i"
    "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-secure-$i
  labels: {type: local-test}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: $SEC_NS, name: data-$SEC_CL-$i}
  hostPath: {path: $RUN/volumes/pv-secure-$i, type: Directory}
EOF
  done
}

check_secure() {
  make_namespace "$SEC_NS"
  sec_volumes
  "$KUBECTL" apply -n "$SEC_NS" -f manifests/examples/secure-3.yaml
  wait_until 240 "$SEC_CL is Running with 3 ready members (probed over https)" bash -c "[[ \$(\"$KUBECTL\" get rcl \
    $SEC_CL -n $SEC_NS -o jsonpath='{.status.phase}/{.status.readyReplicas}') == Running/3 ]]"
  python3 "$ROOT/tests/k8s/lib/owned.py" --kubectl "$KUBECTL" --namespace "$SEC_NS" --cluster "$SEC_CL" \
    --also "secret/$SEC_CL-ca" --also "secret/$SEC_CL-tls" --also "secret/$SEC_CL-tokens"
  [[ $("$KUBECTL" get secret "$SEC_CL-tls" -n "$SEC_NS" -o jsonpath='{.type}') == kubernetes.io/tls ]] ||
    die "$SEC_CL-tls is not a kubernetes.io/tls Secret"
  "$KUBECTL" get events.events.k8s.io -n "$SEC_NS" -o jsonpath='{.items[*].reason}' | grep -qw AccessTokensCreated ||
    die "no AccessTokensCreated event tells where the tokens are"
  grep -qE '^\s*(tls|auth):' manifests/examples/secure-3.yaml && die "secure-3.yaml asks for TLS or tokens: the step is about the default"
  [[ $(sec_field '.status.security.tls}/{.status.security.auth') == true/true ]] ||
    die "status.security is $(sec_field .status.security), not TLS and tokens on"
  "$KUBECTL" get rcl "$SEC_CL" -n "$SEC_NS" >"$RUN/secure-get.out" || die "kubectl get rcl failed"
  grep -qE "^$SEC_CL +1 +3 +3 +$SEC_CL-[0-2] +[0-9]+ +Running" "$RUN/secure-get.out" ||
    die "kubectl get rcl prints: $(cat "$RUN/secure-get.out")"
  log "defaults: status.security tls and auth on; kubectl get rcl: $(tail -1 "$RUN/secure-get.out" | tr -s ' ')"

  sec_secret "$SEC_CL-ca" ca.crt >"$RUN/secure-ca.crt"
  local read write primary code
  read=$(sec_secret "$SEC_CL-tokens" read) write=$(sec_secret "$SEC_CL-tokens" write)
  primary=$(sec_field .status.primary)
  # The node's certificate verifies against the CA under the pod's name.
  openssl s_client -connect "$(pod_ip "$SEC_NS" "$primary"):7000" -servername "$primary.$SEC_CL-headless.$SEC_NS.svc" \
    -verify_hostname "$primary.$SEC_CL-headless.$SEC_NS.svc" -CAfile "$RUN/secure-ca.crt" -verify_return_error \
    </dev/null >"$RUN/secure-s_client.out" 2>&1 || die "the certificate of $primary does not verify: $(tail -3 "$RUN/secure-s_client.out")"

  code=$(sec_put "$primary" secure/1 "$write")
  [[ $code == 2* ]] || die "a write with the write token got $code: $(cat "$RUN/secure-put.out")"
  code=$(sec_put "$primary" secure/2 "")
  [[ $code == 401 ]] || die "a write without a token got $code, not 401"
  code=$(sec_put "$primary" secure/3 "$read")
  [[ $code == 403 ]] || die "a write with the read token got $code, not 403"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $read" \
    --cacert "$RUN/secure-ca.crt" "$(sec_url "$primary")/v1/kv/secure/1?consistency=linearizable" || true)
  [[ $code == 200 ]] || die "a read with the read token got $code"
  # Plain http is answered in plain http, once, that it must be https, and nothing is applied.
  code=$(curl -s -o "$RUN/secure-http.out" -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $write" \
    -X PUT --data '1' "http://$(pod_ip "$SEC_NS" "$primary"):7000/v1/kv/secure/4" || true)
  if [[ $code != 400 ]] || ! grep -q tls_required "$RUN/secure-http.out"; then
    die "plain http got $code ($(cat "$RUN/secure-http.out")), not 400 tls_required"
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $read" \
    --cacert "$RUN/secure-ca.crt" "$(sec_url "$primary")/v1/kv/secure/4?consistency=linearizable" || true)
  [[ $code == 404 ]] || die "the write sent over plain http reads back with $code, not 404"
  log "https: write token 2xx, no token 401, read token 403 on a write, read token reads, plain http 400 tls_required and not applied"

  local term t0 deadline=$((SECONDS + 180)) now next="" n=0 took
  term=$(sec_field .status.term)
  t0=$(date +%s.%N)
  "$KUBECTL" delete pod "$primary" -n "$SEC_NS" --wait=false
  while ((SECONDS < deadline && n < 1000)); do
    now=$(sec_field '.status.term}/{.status.primary' 2>/dev/null || true)
    next=${now#*/}
    if [[ -n $next && ${now%%/*} -gt $term ]] && [[ $(sec_put "$next" secure/after "$write") == 2* ]]; then
      took=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
      break
    fi
    n=$((n + 1))
    sleep 0.2
  done
  [[ -n ${took:-} ]] || die "no https write was acknowledged by a primary of a newer term within 180 s"
  log "failover over https: term $term -> $(sec_field .status.term), primary $next; first write acknowledged $took s after deleting $primary"
  echo "secure-3 failover (https, tokens), from the pod deletion to the first acknowledged write: $took s" >>"$RUN/report.txt"

  "$KUBECTL" delete rcl "$SEC_CL" -n "$SEC_NS" --wait=true --timeout 60s
  wait_until 120 "the garbage collector removes what $SEC_CL owned, its Secrets included" owned_gone "$SEC_NS" "$SEC_CL"
}
