#!/usr/bin/env bash
# arm64 smoke test of dist/kpr-linux-arm64: boots Debian bookworm's arm64 kernel in
# qemu-system-aarch64 (TCG emulation on an x86 host) with an arm64 userland unpacked from Debian
# arm64 packages (libc6, libbpf1, libelf1, zlib1g, bash, iproute2, busybox-static; fetched with a
# private apt config, so the host's dpkg architectures are untouched), and runs inside it:
# `kpr version`, `kpr bpf probe`, `kpr apply -f examples/demo` on the demo's namespaces, one
# ClusterIP request (socket LB) and one NodePort request (tc) answered by a demo pod (the client
# is Bun's fetch run by the same binary: busybox's static wget segfaults in this guest).
#   sudo bash scripts/arm64-smoke.sh [--results DIR]
# Prints one line per step and "N passed, N failed"; results in DIR (default
# $KPR_MATRIX_CACHE/results/arm64).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
. scripts/vm/lib.sh
out=$KPR_MATRIX_CACHE/results/arm64
[ "${1:-}" = --results ] && out=$2
[ "$(id -u)" = 0 ] || die "run as root"
start=$(now)
export PATH="$REPO/node_modules/.bin:$PATH"
bun build.ts --arch arm64 >&2 || die "build --arch arm64 failed"
command -v qemu-system-aarch64 >/dev/null || bash scripts/bootstrap.sh >&2
apt_setup

# the arm64 userland: these packages and their dependencies, from bookworm, unpacked into one dir
root=$KPR_MATRIX_CACHE/arm64-root
debs=$KPR_MATRIX_CACHE/arm64-debs
pkgs="libc6 libbpf1 libelf1 zlib1g bash iproute2 busybox-static"
if [ ! -e "$root/.done" ] || [ "$(cat "$root/.done")" != "$pkgs" ]; then
  say "arm64 userland: $pkgs (+ dependencies, bookworm)"
  mkdir -p "$debs/partial"
  PAPT_ARCH=arm64 papt apt-get install -y --download-only --no-install-recommends -t bookworm \
    -o Dir::Cache::archives="$debs" $pkgs >/dev/null || die "apt-get download of the arm64 userland failed"
  rm -rf "$root" && mkdir -p "$root"
  for d in "$debs"/*_arm64.deb "$debs"/*_all.deb; do
    [ -e "$d" ] && { dpkg-deb -x "$d" "$root" || die "dpkg-deb -x $d failed"; }
  done
  for d in proc sys dev run tmp var/tmp root; do mkdir -p "$root/$d"; done
  echo "$pkgs" >"$root/.done"
fi
mkdir -p "$root$REPO"

pkg=$(kernel_package 6.1 arm64)
[ -n "$pkg" ] || die "no linux-image-6.1.*-arm64 in bookworm"
kdir=$(fetch_unpack "$pkg:arm64")
moddir=$(modules_dir "$kdir")
initrd=$KPR_MATRIX_CACHE/initrd-$(basename "$moddir").gz
build_initramfs "$moddir" "$initrd" "$root/bin/busybox" scripts/vm/init \
  virtio_pci virtio_mmio 9pnet_virtio 9p veth sch_ingress cls_bpf
rm -rf "$out" && mkdir -p "$out"
say "booting $pkg in qemu-system-aarch64 (TCG; prep $(elapsed "$start") s)"
boot=$(now)
timeout 1800 qemu-system-aarch64 -M virt -cpu max -smp 2 -m 2048 -nographic -no-reboot \
  -kernel "$kdir"/boot/vmlinuz-* -initrd "$initrd" \
  -append "console=ttyAMA0 panic=-1 quiet kpr.stage2=$REPO/scripts/vm/arm64-guest.sh kpr.repo=$REPO kpr.reposhare" \
  -virtfs "local,path=$root,mount_tag=hostroot,security_model=none,readonly=on" \
  -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$out,mount_tag=results,security_model=none" \
  -nic none >"$out/console.log" 2>&1
rc=$?
[ -e "$out/done" ] || echo "vm failed 0 1 0 $(elapsed "$boot") qemu-exit-$rc-without-results(see-$out/console.log)" >>"$out/results"
echo "boot+smoke $(elapsed "$boot") s, total $(elapsed "$start") s" >"$out/timing"
sed 's/^/  /' "$out/results"
p=$(awk '$2 == "passed"' "$out/results" | wc -l)
f=$(awk '$2 == "failed"' "$out/results" | wc -l)
echo "arm64 smoke: $(cat "$out/timing")"
echo "$p passed, $f failed"
[ "$f" -eq 0 ]
