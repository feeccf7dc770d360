#!/usr/bin/env bash
# Sets up, lints (a lint finding fails the run), then runs the whole test suite (unit and
# real-kernel end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run --silent lint
exec node scripts/run-tests.mjs "$@"
