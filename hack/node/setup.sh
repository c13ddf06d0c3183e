#!/usr/bin/env bash
# Prepares this machine to run a real node for tests/node: installs the container runtime from
# Debian (containerd, runc, the CNI plugins, iptables and conntrack for kube-proxy) when missing,
# and builds the two images the tests run, cached outside the repository:
#   - pause: Kubernetes' own build/pause/linux/pause.c from the pinned k8s.io/kubernetes module,
#     compiled static with gcc;
#   - busybox: Debian's busybox-static with a symlink per applet (sh, httpd, wget, nc, tail, ...).
# Needs root (apt-get; the node itself runs as root). Prints `NAME=IMAGE ARCHIVE` per image, and
# `containerd=VERSION`, the containerd the node must report it runs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Debian package -> the upstream version it must be (Debian's revision may move with security fixes).
declare -A pins=(
  [containerd]=1.6.20
  [runc]=1.1.5
  [containernetworking-plugins]=1.1.1
  [busybox-static]=1:1.35.0
  [iptables]=1.8.9
  [conntrack]=1:1.4.7
)

# shellcheck source=../lib/apt.sh
source "${here}/../lib/apt.sh"

install_pinned "the node tier"

k8s_dir="$(cd "${here}/../controlplane/kubernetes" && GOFLAGS=-mod=mod go mod download -json k8s.io/kubernetes | awk -F'"' '$2 == "Dir" {print $4}')"
pause_version="$(awk '$1 == "TAG" {print $3}' "${k8s_dir}/build/pause/Makefile")"
busybox_version="$(installed_version busybox-static)"
images="${PODGRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podgraft}/node/pause-${pause_version}_busybox-${busybox_version//[:+~]/_}_$(sha256sum "${here}/image.py" | cut -c1-12)"
pause_image="localhost/podgraft/pause:${pause_version}"
busybox_image="localhost/podgraft/busybox:$(sed -E 's/^[0-9]+://; s/-.*//' <<<"${busybox_version}")"

if [[ ! -f "${images}/pause.tar" || ! -f "${images}/busybox.tar" ]]; then
  mkdir -p "${images}"
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  mkdir -p "${work}/pause" "${work}/busybox/bin" "${work}/busybox/tmp"
  gcc -Os -Wall -Werror -static -DVERSION="v${pause_version}-podgraft" \
    -o "${work}/pause/pause" "${k8s_dir}/build/pause/linux/pause.c"
  cp /bin/busybox "${work}/busybox/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ "${applet}" == busybox ]] || ln -s busybox "${work}/busybox/bin/${applet}"
  done
  chmod 1777 "${work}/busybox/tmp"
  python3 "${here}/image.py" --rootfs "${work}/pause" --name "${pause_image}" \
    --out "${images}/pause.tar" --entrypoint /pause
  python3 "${here}/image.py" --rootfs "${work}/busybox" --name "${busybox_image}" \
    --out "${images}/busybox.tar" --cmd sh
fi
echo "pause=${pause_image} ${images}/pause.tar"
echo "busybox=${busybox_image} ${images}/busybox.tar"
echo "containerd=${pins[containerd]}"
