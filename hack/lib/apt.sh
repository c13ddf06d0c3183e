# Sourced by hack/ scripts: Debian packages pinned by upstream version.
#   declare -A pins=([package]=upstream-version ...); install_pinned "what for"
# installs (apt-get, root) every package whose installed version does not start with its pin, and
# refuses when Debian offers another version. Waits for another apt-get holding dpkg's lock.

installed_version() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}'; }

install_pinned() {
  local what="$1" pkg candidate wanted=() args=()
  for pkg in "${!pins[@]}"; do
    [[ "$(installed_version "${pkg}")" == "${pins[${pkg}]}"* ]] || wanted+=("${pkg}")
  done
  [[ ${#wanted[@]} -gt 0 ]] || return 0
  [[ $(id -u) -eq 0 ]] || { echo "${what}: installing ${wanted[*]} needs root" >&2; exit 1; }
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  for pkg in "${wanted[@]}"; do
    candidate="$(apt-cache policy "${pkg}" | awk '/Candidate:/ {print $2}')"
    [[ "${candidate}" == "${pins[${pkg}]}"* ]] || {
      echo "${what}: Debian offers ${pkg} ${candidate:-nothing}, ${what} is pinned to ${pins[${pkg}]}" >&2
      exit 1
    }
    args+=("${pkg}=${candidate}")
  done
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${args[@]}" >&2
}
