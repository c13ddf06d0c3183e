#!/usr/bin/env bash
# Builds helm from the pinned Go module beside this script and caches it outside the repository,
# keyed by the pinned version and the Go toolchain. Prints the path of the helm binary.
# Honours HELM_BIN: when set, that binary is used instead (it must be executable).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${HELM_BIN:-}" ]]; then
  [[ -x "${HELM_BIN}" ]] || { echo "HELM_BIN=${HELM_BIN} is not an executable file" >&2; exit 1; }
  echo "${HELM_BIN}"
  exit 0
fi

helm_version="$(awk '/^require helm.sh\/helm\/v3 /{print $3}' "${here}/go.mod")"
[[ -n "${helm_version}" ]] || { echo "no 'require helm.sh/helm/v3' line in ${here}/go.mod" >&2; exit 1; }
go_version="$(go env GOVERSION)"
cache="${PODGRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podgraft}/helm/${helm_version}_${go_version}"

if [[ -x "${cache}/helm" ]]; then
  echo "${cache}/helm"
  exit 0
fi

mkdir -p "${cache}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
# The same -X flags as helm's own Makefile: without them `helm version` prints a bare "v3.x" and
# `.Capabilities.KubeVersion` (used by `helm template` and `helm lint`'s deprecation checks) is v1.20.
client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "${here}/go.mod")"   # v0.35.1 -> Kubernetes 1.35
k8s_major=1
k8s_minor="$(cut -d. -f2 <<<"${client_go}")"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=${k8s_major} -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done
start=$(date +%s)
tmp="$(mktemp "${cache}/helm.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT
(cd "${here}" && go build -trimpath -ldflags="${ldflags}" -o "${tmp}" helm.sh/helm/v3/cmd/helm) >&2
chmod 0755 "${tmp}"
mv "${tmp}" "${cache}/helm"
trap - EXIT
echo "built helm ${helm_version} with ${go_version} in $(( $(date +%s) - start ))s" >&2
echo "${cache}/helm"
