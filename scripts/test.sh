#!/usr/bin/env bash
# Sets up, then runs the whole test suite (unit and real-kernel end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node scripts/run-tests.mjs "$@"
