#!/usr/bin/env bash
# Installs what kube-proxy-ts needs on a Debian-like machine, then builds it.
# Kernel tools come from apt only when missing; npm packages from the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v ipset >/dev/null 2>&1 || missing+=(ipset)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${missing[*]}; run as root to install them with apt" >&2
  else
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
# Puts the kube-proxy-ts executable on PATH (a global symlink to this checkout).
if [ "$(id -u)" -eq 0 ] && ! command -v kube-proxy-ts >/dev/null 2>&1; then
  npm link --no-audit --no-fund --loglevel=error >/dev/null || echo "setup: npm link failed; use npx kube-proxy-ts" >&2
fi
