#!/usr/bin/env bash
# Builds Kubernetes binaries from the pinned Go modules beside this script and caches them outside
# the repository, keyed by the pinned versions and the Go toolchain.
#
#   build.sh [BINARY...]    BINARY: etcd kube-apiserver kube-controller-manager kube-scheduler
#                                   kubelet kube-proxy kubectl (default: kube-apiserver etcd)
#
# Prints one line `BINARY=PATH` per binary asked for. Honours KUBEBUILDER_ASSETS (the envtest
# convention): a binary found in that directory is used instead of a built one. Every Kubernetes
# command comes from the one module in kubernetes/, so the packages they share compile once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(kube-apiserver etcd)

k8s_version="$(awk '/^require k8s.io\/kubernetes /{print $3}' "${here}/kubernetes/go.mod")"
etcd_version="$(awk '/^require go.etcd.io\/etcd\/server\/v3 /{print $3}' "${here}/etcd/go.mod")"
go_version="$(go env GOVERSION)"
cache="${PODGRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podgraft}/controlplane/k8s-${k8s_version}_etcd-${etcd_version}_${go_version}_v2"

# Where each binary is, or empty when it still has to be built.
located() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/$1" ]]; then
    echo "${KUBEBUILDER_ASSETS}/$1"
  elif [[ -x "${cache}/$1" ]]; then
    echo "${cache}/$1"
  fi
}

missing() {
  local bin
  for bin in "${wanted[@]}"; do
    [[ -n "$(located "${bin}")" ]] || echo "${bin}"
  done
}

build() {
  local bin="$1" dir pkg ldflags start
  case "${bin}" in
    etcd) dir=etcd pkg=go.etcd.io/etcd/server/v3 ldflags="-s -w" ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl)
      dir=kubernetes pkg="k8s.io/kubernetes/cmd/${bin}" ldflags="-s -w ${version_flags}" ;;
    *) echo "build.sh: unknown binary ${bin}" >&2; return 1 ;;
  esac
  start=$(date +%s)
  (cd "${here}/${dir}" && go build -trimpath -ldflags="${ldflags}" -o "${staging}/${bin}" "${pkg}") >&2
  chmod 0755 "${staging}/${bin}"
  mv "${staging}/${bin}" "${cache}/${bin}"
  echo "built ${bin} (${dir} module, k8s ${k8s_version}, etcd ${etcd_version}) in $(( $(date +%s) - start ))s" >&2
}

mapfile -t todo < <(missing)
if [[ ${#todo[@]} -gt 0 ]]; then
  mkdir -p "${cache}"
  # Concurrent callers (pytest-xdist workers, parallel CI jobs) build once: the others wait, then reuse.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${cache}.lock"
    flock 9
    mapfile -t todo < <(missing)
  fi
  staging="$(mktemp -d "${cache}.build.XXXXXX")"  # a failed build leaves nothing half-written
  trap 'rm -rf "${staging}"' EXIT
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  minor="$(echo "${k8s_version}" | cut -d. -f2)"
  pkg=k8s.io/component-base/version
  version_flags="-X ${pkg}.gitVersion=${k8s_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  for bin in "${todo[@]}"; do
    build "${bin}"
  done
fi

for bin in "${wanted[@]}"; do
  echo "${bin}=$(located "${bin}")"
done
