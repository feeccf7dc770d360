#!/usr/bin/env bash
# Installs what kube-proxy-ts needs on a Debian-like machine, then builds it.
# Kernel tools come from apt only when missing; npm packages from the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
# Puts the kube-proxy-ts executable on PATH (a global symlink to this checkout).
if [ "$(id -u)" -eq 0 ] && ! command -v kube-proxy-ts >/dev/null 2>&1; then
  npm link --no-audit --no-fund --loglevel=error >/dev/null || echo "setup: npm link failed; use npx kube-proxy-ts" >&2
fi
