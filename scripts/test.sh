#!/usr/bin/env bash
# Set up everything (Debian packages, Python dependencies) and run the whole test suite:
# lint, types, unit, integration, browser and load tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install chromium coturn
scripts/setup.sh test
export SFU_CHROMIUM=/usr/bin/chromium
.venv/bin/ruff check sfu tests $(ls -d benchmarks 2>/dev/null)
.venv/bin/mypy sfu
exec .venv/bin/python -m pytest -q -rs "$@"
