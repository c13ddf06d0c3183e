#!/usr/bin/env bash
# Installs what `make bench-instructions` (and so `make test`) needs from Debian when missing:
# valgrind (callgrind counts the instructions) and gcc (builds bench/callgrind_marks.c against the
# valgrind package's header). Needs root to install (apt-get); does nothing when both are there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib/apt.sh"

# Debian package -> the upstream version it must be (Debian's revision may move with security fixes).
declare -A pins=(
  [valgrind]=1:3.19.0
  [gcc]=4:12.2.0
)
install_pinned "bench/setup.sh"
