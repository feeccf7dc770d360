#!/usr/bin/env bash
# Sets up, then runs kube-proxy-ts in a sandbox on the example cluster in examples/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/cli/kube-proxy-ts.js sandbox "$@"
