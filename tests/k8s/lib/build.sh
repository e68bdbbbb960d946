# shellcheck shell=bash
# Builds the control-plane binaries from Go modules (tests/k8s/tools/*/go.mod) into a cache folder
# keyed by version, so a second run builds nothing; the Go build cache makes a rebuild after a version
# change cheap too. Nothing is downloaded except through the Go module proxy.
#
# Sourced by control-plane.sh. Needs: log, die; sets K8S_BIN (folder of the binaries).

KUBE_VERSION=v1.35.4 # k8s-openapi feature v1_35 (operator/Cargo.toml)
ETCD_VERSION=v3.6.6  # what Kubernetes v1.35 is tested with (its build/dependencies.yaml)
KWOK_VERSION=v0.8.0

# The version the binaries report (/version): Helm checks the chart's kubeVersion against it, and
# a plain `go build` would report v0.0.0-master.
kube_ldflags() {
  local v=$KUBE_VERSION minor
  minor=$(cut -d. -f2 <<<"$v")
  local pkg flags=()
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=("-X $pkg.gitVersion=$v" "-X $pkg.gitMajor=1" "-X $pkg.gitMinor=$minor" "-X $pkg.gitTreeState=clean")
  done
  echo "${flags[*]}"
}

# build_tool MODULE_DIR OUT_DIR OUTPUT [go build args...]: builds into OUT_DIR.part (OUTPUT: a file
# name there, or "" for one binary per package), then renames, so an interrupted build never leaves
# a cached folder that looks complete.
build_tool() {
  local mod=$1 out=$2 name=$3
  shift 3
  rm -rf "$out.part"
  mkdir -p "$out.part"
  (cd "$mod" && go build -o "$out.part/$name" "$@")
  rm -rf "$out"
  mv "$out.part" "$out"
}

build_control_plane() {
  local tools=$ROOT/tests/k8s/tools cache=${K8S_BIN_CACHE:-$ROOT/.cache/k8s-bin}
  command -v go >/dev/null || die "go is required (the Go toolchain builds the control plane)"
  local start=$SECONDS dir
  local built=""
  dir=$cache/kubernetes-$KUBE_VERSION
  if [[ ! -x $dir/kube-apiserver || ! -x $dir/kube-controller-manager || ! -x $dir/kube-scheduler ]]; then
    log "building kube-apiserver, kube-controller-manager, kube-scheduler $KUBE_VERSION (go build)"
    build_tool "$tools/kube" "$dir" "" -ldflags "$(kube_ldflags)" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler
    built+=" kubernetes"
  fi
  dir=$cache/etcd-$ETCD_VERSION
  if [[ ! -x $dir/etcd ]]; then
    log "building etcd $ETCD_VERSION (go build)"
    # The main package is the module root (go.etcd.io/etcd/server/v3): name the binary.
    build_tool "$tools/etcd" "$dir" etcd go.etcd.io/etcd/server/v3
    built+=" etcd"
  fi
  dir=$cache/kwok-$KWOK_VERSION
  if [[ ! -x $dir/kwok ]]; then
    log "building kwok $KWOK_VERSION (go build)"
    build_tool "$tools/kwok" "$dir" "" sigs.k8s.io/kwok/cmd/kwok
    built+=" kwok"
  fi
  K8S_BIN=$RUN/bin
  mkdir -p "$K8S_BIN"
  ln -s "$cache/kubernetes-$KUBE_VERSION"/* "$cache/etcd-$ETCD_VERSION/etcd" "$cache/kwok-$KWOK_VERSION/kwok" "$K8S_BIN/"
  log "control-plane binaries ready in $((SECONDS - start)) s (built:${built:- nothing, all cached})"
  # The kwok stages (what a simulated node and pod go through) come from the same module.
  KWOK_MODULE_DIR=$(cd "$tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [[ -d $KWOK_MODULE_DIR/kustomize/stage ]] || die "kwok stages not found in $KWOK_MODULE_DIR"
}
