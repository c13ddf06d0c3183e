#!/usr/bin/env bash
# Builds Podgraft's image from the repository's Dockerfile with no registry and no Docker daemon,
# and caches it outside the repository by content, like the control-plane binaries.
#
#   build.sh          prints `podgraft=IMAGE ARCHIVE` (an OCI archive for `ctr images import`)
#
# - The builder is Debian's podman (daemonless), installed with apt-get when missing (root).
# - The bases are made here: mmdebstrap of Debian bookworm (the host's apt sources) with python3,
#   python3-venv and ca-certificates, imported into podman and passed as PYTHON_IMAGE (it stands
#   in for python:3.11-slim, which no registry here serves), and the same plus gcc, libc6-dev and
#   python3-dev, passed as BUILDER_IMAGE (for python:3.11: mypyc compiles the engine there). The
#   Dockerfile runs the same steps on both pairs.
# - pip inside the build reaches the package index the way the host's pip does: the build uses the
#   host network, and gets a pip.conf written from the host's pip configuration (`pip config list`,
#   environment included) plus the CA bundle that configuration names, mounted for the RUN steps
#   only (nothing of it is in the image).
# - RUN steps use chroot isolation: this sandbox has hybrid cgroups (crun refuses them) and no
#   CAP_SYS_RESOURCE (runc cannot set rlimits), so no OCI runtime can start a build container.
# - The cache key is the content of the Dockerfile, .dockerignore, requirements.lock,
#   requirements-build.lock, pyproject.toml, setup.py and app/, and this script (its base recipes). README.md is copied into the build
#   context (pyproject's readme) but left out of the key: it only becomes the wheel's description.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"

# Debian package -> the upstream version it must be.
declare -A pins=([podman]=4.3.1 [mmdebstrap]=1.3.5)
python_pin=3.11.2 # python3.11 in the base: the Python the image runs

# shellcheck source=../lib/apt.sh
source "${here}/../lib/apt.sh"

# The files whose content the image is made of, hashed in a stable order.
content_key() {
  (
    cd "${repo}"
    {
      sha256sum Dockerfile .dockerignore requirements.lock requirements-build.lock pyproject.toml setup.py \
        "${here}/build.sh"
      find app -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -name '*.so' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sed "s|${here}/||" | sha256sum | cut -c1-16
  )
}

# A pip.conf with the host pip's settings that decide how the index is reached (never find-links:
# a host directory that the build cannot see). Prints the CA bundle it names, if any.
write_pip_conf() {
  local out="$1" line key value
  local -A settings=()
  # `pip config list` prints files first, then `:env:.KEY=...` lines; the environment wins, as in pip.
  while IFS= read -r line; do
    key="${line%%=*}" value="${line#*=}"
    key="${key##*.}" value="${value#\'}" value="${value%\'}"
    [[ "${key}" == default-timeout ]] && key=timeout
    case "${key}" in
      index-url | extra-index-url | trusted-host | cert | client-cert | timeout | retries | proxy) settings[${key}]="${value}" ;;
    esac
  done < <(python3 -m pip config list 2>/dev/null | grep -v '^:env:'; python3 -m pip config list 2>/dev/null | grep '^:env:')
  {
    printf '[global]\n'
    for key in "${!settings[@]}"; do printf '%s = %s\n' "${key}" "${settings[${key}]}"; done
  } >"${out}"
  echo "${settings[cert]:-}"
}

install_pinned "the image build"

# A base made with mmdebstrap from `recipe` (cached by it), imported into podman; prints its name.
make_base() {
  local name="$1" base_key base_tar base_image python_version sources started
  shift
  base_key="$(printf '%s\n' "$@" | sha256sum | cut -c1-12)"
  base_tar="${cache}/${name}-bookworm-${base_key}.tar"
  base_image="localhost/podgraft/${name}:bookworm-${base_key}"
  if [[ ! -f "${base_tar}" ]]; then
    started=$(date +%s)
    sources=(/etc/apt/sources.list.d/debian.sources)
    [[ -f "${sources[0]}" ]] || sources=(/etc/apt/sources.list)
    mmdebstrap --quiet "$@" --format=tar bookworm "${work}/${name}.tar" "${sources[0]}" \
      >"${work}/${name}.log" 2>&1 || { cat "${work}/${name}.log" >&2; exit 1; }
    mv "${work}/${name}.tar" "${base_tar}"
    echo "made the base ${base_tar} in $(($(date +%s) - started))s" >&2
  fi
  python_version="$(tar -xOf "${base_tar}" ./var/lib/dpkg/status | awk '/^Package: python3.11-minimal$/ {p=1} p && /^Version:/ {print $2; p = 0}')"
  [[ "${python_version}" == "${python_pin}"* ]] || {
    echo "image/build.sh: the base ${name} has python3.11 ${python_version:-missing}, the image is pinned to ${python_pin}" >&2
    exit 1
  }
  if ! podman image exists "${base_image}"; then
    podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "${base_tar}" "${base_image}" >/dev/null
  fi
  echo "${base_image}"
}

cache="${PODGRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podgraft}/image"
mkdir -p "${cache}"
version="$(awk '$1 == "appVersion:" {gsub(/"/, "", $2); print $2}' "${repo}/charts/podgraft/Chart.yaml")"
image="localhost/podgraft/podgraft:${version}"
key="$(content_key)"
archive="${cache}/podgraft-${version}-${key}.oci.tar"

if [[ ! -f "${archive}" ]]; then
  # One build at a time on this machine (podman's storage and this cache are shared).
  exec 9>"${cache}.lock"
  flock 9
fi
if [[ ! -f "${archive}" ]]; then
  work="$(mktemp -d "${cache}/build.XXXXXX")"
  trap 'rm -rf "${work}"' EXIT
  start=$(date +%s)

  # The bases: Essential packages plus python3, python3-venv and ca-certificates, merged /usr
  # without perl (usr-is-merged instead of usrmerge), no documentation but the copyright files; the
  # builder's also what mypyc compiles with.
  recipe=(--variant=essential --include=python3,python3-venv,ca-certificates,usr-is-merged
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*')
  base_image="$(make_base python-base "${recipe[@]}")"
  builder_image="$(make_base python-builder "${recipe[@]}" --include=gcc,libc6-dev,python3-dev)"

  cert="$(write_pip_conf "${work}/pip.conf")"
  mounts=(-v "${work}/pip.conf:/etc/pip.conf:ro")
  [[ -z "${cert}" ]] || mounts+=(-v "${cert}:${cert}:ro")
  podman build --isolation=chroot --network=host "${mounts[@]}" \
    --build-arg "PYTHON_IMAGE=${base_image}" --build-arg "BUILDER_IMAGE=${builder_image}" \
    --tag "${image}" "${repo}" \
    >"${work}/build.log" 2>&1 || { cat "${work}/build.log" >&2; exit 1; }
  podman save --quiet --format oci-archive --output "${work}/image.tar" "${image}"
  mv "${work}/image.tar" "${archive}"
  echo "built ${image} (${key}) in $(($(date +%s) - start))s" >&2
fi
echo "podgraft=${image} ${archive}"
