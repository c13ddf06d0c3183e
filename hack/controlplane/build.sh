#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the pinned Go modules beside this script and caches them
# outside the repository, keyed by the pinned versions. Prints the directory holding both binaries.
# Honours KUBEBUILDER_ASSETS (the envtest convention): when set, those binaries are used instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for bin in kube-apiserver etcd; do
    [[ -x "${KUBEBUILDER_ASSETS}/${bin}" ]] || { echo "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} has no ${bin}" >&2; exit 1; }
  done
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

k8s_version="$(awk '/^require k8s.io\/kubernetes /{print $3}' "${here}/kube-apiserver/go.mod")"
etcd_version="$(awk '/^require go.etcd.io\/etcd\/server\/v3 /{print $3}' "${here}/etcd/go.mod")"
go_version="$(go env GOVERSION)"
cache="${PODGRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podgraft}/controlplane/k8s-${k8s_version}_etcd-${etcd_version}_${go_version}_v2"

if [[ -x "${cache}/kube-apiserver" && -x "${cache}/etcd" ]]; then
  echo "${cache}"
  exit 0
fi

mkdir -p "${cache}"
# Concurrent callers (pytest-xdist workers, parallel CI jobs) build once: the others wait, then reuse.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${cache}.lock"
  flock 9
  if [[ -x "${cache}/kube-apiserver" && -x "${cache}/etcd" ]]; then
    echo "${cache}"
    exit 0
  fi
fi
export CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
minor="$(echo "${k8s_version}" | cut -d. -f2)"
pkg=k8s.io/component-base/version
version_flags="-X ${pkg}.gitVersion=${k8s_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"

etcd_tmp="$(mktemp "${cache}/etcd.XXXXXX")"
apiserver_tmp="$(mktemp "${cache}/kube-apiserver.XXXXXX")"
trap 'rm -f "${etcd_tmp}" "${apiserver_tmp}"' EXIT
(cd "${here}/etcd" && go build -trimpath -ldflags='-s -w' -o "${etcd_tmp}" go.etcd.io/etcd/server/v3) >&2
(cd "${here}/kube-apiserver" && go build -trimpath \
  -ldflags="-s -w ${version_flags}" -o "${apiserver_tmp}" k8s.io/kubernetes/cmd/kube-apiserver) >&2
chmod 0755 "${etcd_tmp}" "${apiserver_tmp}"
mv "${etcd_tmp}" "${cache}/etcd"
mv "${apiserver_tmp}" "${cache}/kube-apiserver"
trap - EXIT
echo "built kube-apiserver ${k8s_version} and etcd ${etcd_version} in $(( $(date +%s) - start ))s" >&2
echo "${cache}"
