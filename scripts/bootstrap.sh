#!/usr/bin/env bash
# Installs what kpr needs on a fresh Debian/Ubuntu machine: the Debian packages (toolchain for the
# eBPF objects, libbpf, network tools and the test clients) and the npm packages, Bun among them.
# Idempotent: installs only what is missing. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

[ "$(uname -s)" = Linux ] || die "kpr runs on Linux only (this is $(uname -s))"
[ -r /etc/os-release ] || die "cannot read /etc/os-release: unsupported system (need Debian 12+ or Ubuntu 22.04+)"
. /etc/os-release
case "${ID:-} ${ID_LIKE:-}" in
  *debian*|*ubuntu*) ;;
  *) die "unsupported distribution '${ID:-unknown}': this script needs apt (Debian 12+ or Ubuntu 22.04+)" ;;
esac
command -v apt-get >/dev/null || die "apt-get not found: unsupported system"
command -v npm >/dev/null || die "npm not found: install Node.js 18+ with npm first (apt-get install nodejs npm)"
if [ "$(id -u)" != 0 ]; then
  die "run as root: installing packages and loading eBPF programs need it"
fi

# package -> a file or command that proves it is installed
declare -A need=(
  [clang]=/usr/bin/clang
  [gcc]=/usr/bin/gcc
  [llvm]=/usr/bin/llvm-strip
  [libbpf-dev]=/usr/include/bpf/libbpf.h
  [libbpf1]=libbpf.so.1
  [bpftool]=bpftool
  [iproute2]=/usr/sbin/ip
  [ethtool]=/usr/sbin/ethtool
  [util-linux]=/usr/bin/nsenter
  [curl]=/usr/bin/curl
  [socat]=/usr/bin/socat
  [iperf3]=/usr/bin/iperf3
  [iptables]=/usr/sbin/iptables
  [nftables]=/usr/sbin/nft
  [linux-libc-dev]=/usr/include/linux/bpf.h
  [gcc-multilib]=/usr/include/x86_64-linux-gnu/gnu/stubs-32.h
  [iputils-ping]=/usr/bin/ping
  [tcpdump]=/usr/bin/tcpdump
  [python3]=/usr/bin/python3
  [procps]=/usr/sbin/sysctl
  # scripts/kernel-matrix.sh and scripts/arm64-smoke.sh: VMs, their initramfs, modules
  [qemu-system-x86]=/usr/bin/qemu-system-x86_64
  [qemu-system-arm]=/usr/bin/qemu-system-aarch64
  [busybox-static]=/bin/busybox
  [cpio]=/usr/bin/cpio
  [xz-utils]=/usr/bin/xz
  [zstd]=/usr/bin/zstd
  [openssl]=/usr/bin/openssl
  # strace: the agent's end-to-end tests kill the daemon at a chosen bpf() call (fault injection)
  [strace]=/usr/bin/strace
  # kubectl, a real client the tests check the test API server with: Debian 12 ships it as
  # kubernetes-client, later releases as kubectl (picked below)
  [kubernetes-client]=/usr/bin/kubectl
)
missing=()
for pkg in "${!need[@]}"; do
  probe=${need[$pkg]}
  case "$probe" in
    /*) [ -e "$probe" ] && continue ;;
    *.so*) ldconfig -p 2>/dev/null | grep -q "$probe" && continue ;;
    *) command -v "$probe" >/dev/null 2>&1 && continue
       [ -x "/usr/sbin/$probe" ] && continue ;;
  esac
  # gcc-multilib exists only on x86_64; elsewhere it is not needed
  if [ "$pkg" = gcc-multilib ] && [ "$(uname -m)" != x86_64 ]; then continue; fi
  missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  for i in "${!missing[@]}"; do
    [ "${missing[$i]}" = kubernetes-client ] || continue
    for cand in kubernetes-client kubectl; do
      policy=$(apt-cache policy "$cand" 2>/dev/null || true)
      if [[ $policy == *"Candidate: "[0-9]* ]]; then missing[$i]=$cand; continue 2; fi
    done
    say "no kubectl package in apt: the API-server checks that use kubectl will skip"
    unset 'missing[i]'
  done
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
else
  say "Debian packages: all present"
fi

# npm packages (Bun comes from npm as a dev dependency)
if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
else
  say "npm packages: up to date"
fi
node_modules/.bin/bun --version >/dev/null || die "bun from node_modules does not run"
say "ready (bun $(node_modules/.bin/bun --version), $(clang --version | head -1))"
