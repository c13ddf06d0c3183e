#!/usr/bin/env bash
# Installs what `make bench-instructions` (and so `make test`) needs from Debian when missing:
# valgrind (callgrind counts the instructions) and gcc (builds bench/callgrind_marks.c against the
# valgrind package's header). Needs root to install (apt-get); does nothing when both are there.
set -euo pipefail

# Debian package -> the upstream version it must be (Debian's revision may move with security fixes).
declare -A pins=(
  [valgrind]=1:3.19.0
  [gcc]=4:12.2.0
)

installed_version() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}'; }

wanted=()
for pkg in "${!pins[@]}"; do
  [[ "$(installed_version "${pkg}")" == "${pins[${pkg}]}"* ]] || wanted+=("${pkg}")
done
[[ ${#wanted[@]} -gt 0 ]] || exit 0
[[ $(id -u) -eq 0 ]] || { echo "bench/setup.sh: installing ${wanted[*]} needs root" >&2; exit 1; }
apt-get update -qq >&2
args=()
for pkg in "${wanted[@]}"; do
  candidate="$(apt-cache policy "${pkg}" | awk '/Candidate:/ {print $2}')"
  [[ "${candidate}" == "${pins[${pkg}]}"* ]] || {
    echo "bench/setup.sh: Debian offers ${pkg} ${candidate:-nothing}, the harness is pinned to ${pins[${pkg}]}" >&2
    exit 1
  }
  args+=("${pkg}=${candidate}")
done
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${args[@]}" >&2
