#!/usr/bin/env bash
# Installs what kube-proxy-ts and its tests need on a Debian-like machine, then builds it. Kernel
# tools (and user-mode-linux and kmod, for the tests that boot a UML kernel) come from apt only
# when missing; npm packages from the lock file, into this checkout's node_modules.
# Nothing outside the checkout changes besides the apt packages it names: the command is not put
# on PATH (run it with `npx kube-proxy-ts`, or `npm link` it yourself).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --test-tools

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages from package-lock.json into node_modules/" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "setup: building (TypeScript to dist/, about 10 s)" >&2
npm run --silent build
echo "setup: built; run it with: npx kube-proxy-ts --help" >&2
