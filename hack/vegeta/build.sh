#!/usr/bin/env bash
# Builds the pinned vegeta load generator (bench/ only) and caches it outside the repository.
# Prints the binary's path. VEGETA_BIN overrides.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${VEGETA_BIN:-}" ]]; then echo "${VEGETA_BIN}"; exit 0; fi
version="$(awk '/^require github.com\/tsenart\/vegeta\/v12 /{print $3}' "${here}/go.mod")"
out="${PODGRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podgraft}/vegeta/${version}_$(go env GOVERSION)/vegeta"
if [[ ! -x "${out}" ]]; then
  mkdir -p "$(dirname "${out}")"
  (cd "${here}" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "${out}.tmp" github.com/tsenart/vegeta/v12) >&2
  mv "${out}.tmp" "${out}"
fi
echo "${out}"
