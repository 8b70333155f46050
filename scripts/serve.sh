#!/usr/bin/env bash
# Set up and run one server with embedded defaults: demo page at http://127.0.0.1:8080/,
# signaling at /ws, no TURN, no auth (dev mode). Extra arguments go to `sfu serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/sfu serve "$@"
