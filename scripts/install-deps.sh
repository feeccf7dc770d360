#!/usr/bin/env bash
# Installs the kernel tools kube-proxy-ts runs, with apt, when they are missing: nftables,
# iptables (the package ships both the nft and the legacy flavour), ipset, ipvsadm, conntrack,
# iproute2 and perl (the nftables mode's event listener; part of every Debian system). Used by
# scripts/setup.sh (CI, developers) and by the Dockerfile, so the image gets exactly what the
# tests ran with. With --test-tools it also installs what only the tests use: user-mode-linux (a
# kernel with IPVS, run as a process: test/support/uml) and kmod (modprobe, which loads that
# kernel's modules); the image does not get them.
#   install-deps.sh [--test-tools]           install what is missing (needs root)
#   install-deps.sh [--test-tools] --check   only list the missing packages (exit 1 when some are missing)
set -euo pipefail

test_tools=false
check=false
for arg in "$@"; do
  case "$arg" in
    --test-tools) test_tools=true ;;
    --check) check=true ;;
    *) echo "install-deps: unknown argument $arg (expected --test-tools, --check)" >&2; exit 2 ;;
  esac
done

# tool → Debian package
declare -A PACKAGE_OF=(
  [nft]=nftables
  [iptables]=iptables
  [iptables-legacy]=iptables
  [ipset]=ipset
  [ipvsadm]=ipvsadm
  [conntrack]=conntrack
  [ip]=iproute2
  [perl]=perl-base
  [linux.uml]=user-mode-linux
  [modprobe]=kmod
)

tools=(nft iptables iptables-legacy ipset ipvsadm conntrack ip perl)
if $test_tools; then tools+=(linux.uml modprobe); fi

missing=()
for tool in "${tools[@]}"; do
  pkg=${PACKAGE_OF[$tool]}
  # modprobe lives in /usr/sbin, which an unprivileged PATH may lack.
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [[ " ${missing[*]-} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done

if $check; then
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
