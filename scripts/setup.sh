#!/usr/bin/env bash
# Create .venv with the project installed. Usage: scripts/setup.sh [extra...]  (e.g. "test")
# Needs Python >= 3.11; on Debian, installs python3-venv when the venv module is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=${1:-}

source scripts/lib.sh

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "setup: Python >= 3.11 is required" >&2; exit 1; }
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install python3-venv python3-pip
fi
# The C forwarding step (csrc/, sfu._fastpath) needs a C compiler and the Python headers; without
# them the package still installs and forwards in Python (slower: benchmarks/README.md).
if ! command -v cc >/dev/null 2>&1; then
  apt_install gcc libc6-dev || echo "setup: no C compiler; the C forwarding step will not be built" >&2
fi
if [ ! -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
  apt_install python3-dev || echo "setup: no Python headers; the C forwarding step will not be built" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
