#!/usr/bin/env bash
# `make venv`: can the engine be compiled here (setup.py, mypyc)? Prints PODGRAFT_COMPILE's value.
#   1  a C compiler and the interpreter's headers are there (as root, Debian's gcc is installed,
#      pinned, when no compiler is: the same gcc bench/setup.sh pins)
#   0  not, and it says so on stderr: the engine is installed as its Python sources, which run the
#      same code at about twice the CPU per admission ("The compiled engine" in the README)
# Usage: hack/lib/compiler.sh PYTHON
set -euo pipefail
python="$1"
here="$(dirname "${BASH_SOURCE[0]}")"

headers="$("${python}" -c 'import os, sysconfig; print(os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))')"
if ! command -v cc >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  source "${here}/apt.sh"
  declare -A pins=([gcc]=4:12.2.0)
  install_pinned "make venv (a C compiler for the engine)"
fi
if ! command -v cc >/dev/null; then
  echo "make venv: no C compiler (cc): installing the engine interpreted, at about twice the CPU per admission; install gcc, then rm .venv/.installed and make venv to compile it" >&2
  echo 0
elif [[ "${headers}" != True ]]; then
  echo "make venv: ${python} has no C headers (Python.h; Debian: python3-dev): installing the engine interpreted, at about twice the CPU per admission" >&2
  echo 0
else
  echo 1
fi
