#!/usr/bin/env bash
# Installs the kernel tools kube-proxy-ts runs, with apt, when they are missing: nftables,
# iptables (the package ships both the nft and the legacy flavour), ipset, ipvsadm, conntrack
# and iproute2. Used by scripts/setup.sh (CI, developers) and by the Dockerfile, so the image
# gets exactly what the tests ran with.
#   install-deps.sh           install what is missing (needs root)
#   install-deps.sh --check   only list the missing packages (exit 1 when some are missing)
set -euo pipefail

# tool → Debian package
declare -A PACKAGE_OF=(
  [nft]=nftables
  [iptables]=iptables
  [iptables-legacy]=iptables
  [ipset]=ipset
  [ipvsadm]=ipvsadm
  [conntrack]=conntrack
  [ip]=iproute2
)

missing=()
for tool in nft iptables iptables-legacy ipset ipvsadm conntrack ip; do
  pkg=${PACKAGE_OF[$tool]}
  if ! command -v "$tool" >/dev/null 2>&1 && [[ " ${missing[*]-} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done

if [ "${1-}" = "--check" ]; then
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "${missing[*]}"
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root to install them with apt" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
