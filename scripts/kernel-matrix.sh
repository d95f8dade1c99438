#!/usr/bin/env bash
# Kernel matrix: boots each kernel of the matrix (Debian's own packages: 5.10 from bullseye, 6.1
# from bookworm, 6.12 from trixie, fetched with apt into a private cache, never installed) in
# qemu with this machine's userland shared read-only over 9p, runs kpr's suites inside each VM,
# runs the same suites on the host's kernel, and prints one table: kernel × suite → passed /
# failed / skipped (with the reason), then each program's verifier figures per kernel and the
# feature probe per kernel. Ends with "N passed, N failed" (one count per kernel × suite).
#
#   sudo bash scripts/kernel-matrix.sh [options]
#     --kernels "5.10 6.1 6.12"   kernels to boot (default: all three)
#     --full "5.10"               kernels that also run test/e2e (default: the oldest, 5.10, when
#                                 qemu can use KVM; none without: under TCG test/e2e takes
#                                 well over an hour)
#     --host-suites "probe load bpf e2e"   suites on the host kernel (default: all; "" for none)
#     --arm64                     also run scripts/arm64-smoke.sh
#     --markdown FILE             also write the README's requirements tables to FILE
#     --update-readme             put those tables into README.md (between the kernel-matrix markers)
#
# Suites: probe (`kpr bpf probe`), load (every embedded program through the verifier:
# scripts/vm/load-check.ts), bpf (test/bpf), e2e (test/e2e). qemu uses KVM when it can start a vCPU
# with it (scripts/vm/lib.sh have_kvm), TCG otherwise (about 20× slower). Results and logs: $KPR_MATRIX_CACHE/results/<kernel>/.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
. scripts/vm/lib.sh

kernels="5.10 6.1 6.12"
full=auto
host_suites="probe load bpf e2e"
arm64=0
markdown=""
readme=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kernels) kernels=$2; shift 2 ;;
    --full) full=$2; shift 2 ;;
    --host-suites) host_suites=$2; shift 2 ;;
    --arm64) arm64=1; shift ;;
    --markdown) markdown=$2; shift 2 ;;
    --update-readme) readme=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "kernel-matrix: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root: the VMs' suites load eBPF programs and the host suites need it"
for k in $kernels; do [ -n "${SUITE_OF[$k]:-}" ] || die "unknown kernel series $k (have: ${!SUITE_OF[*]})"; done

total_start=$(now)
bash scripts/bootstrap.sh >&2 || die "scripts/bootstrap.sh failed"
export PATH="$REPO/node_modules/.bin:$PATH"
bun build.ts >&2 || die "build failed"
for tool in qemu-system-x86_64 busybox cpio xz; do
  command -v "$tool" >/dev/null || die "$tool missing (scripts/bootstrap.sh installs it)"
done
# decided once qemu is installed (have_kvm starts it once to see that KVM really works)
if have_kvm; then
  [ "$full" = auto ] && full=5.10
else
  [ "$full" = auto ] && full=""
  say "no usable KVM: qemu emulates the CPU (TCG), about 20x slower${full:+; e2e in VMs: $full}"
fi

results=$KPR_MATRIX_CACHE/results
mkdir -p "$results"
timings=()

# run_host SUITES: the suites on this machine's kernel, without a VM
run_host() {
  local dir=$results/host s start
  rm -rf "$dir" && mkdir -p "$dir"
  uname -r >"$dir/kernel"
  : >"$dir/results"
  say "host kernel $(uname -r): $*"
  start=$(now)
  # the guest script's suites, run here with its results dir pointed at $dir
  KPR_MATRIX_OUT=$dir KPR_MATRIX_SUITES="$*" KPR_MATRIX_REPO=$REPO bash scripts/vm/guest.sh --host
  timings+=("host $(uname -r): $(elapsed "$start") s")
}

# boot_vm KDIR INITRD DIR SUITES TIMEOUT: one qemu run of the guest script; its exit code
boot_vm() {
  local kdir=$1 initrd=$2 dir=$3 suites=$4 tmo=$5
  # shellcheck disable=SC2046
  timeout "$tmo" qemu-system-x86_64 $(accel_args x86_64) -m 3072 -smp 2 -nographic -no-reboot \
    -kernel "$kdir"/boot/vmlinuz-* -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet kpr.stage2=$REPO/scripts/vm/guest.sh kpr.repo=$REPO kpr.reposhare kpr.suites=${suites// /,} kpr.timescale=$(have_kvm && echo 1 || echo 10)" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$dir,mount_tag=results,security_model=none" \
    -nic none >"$dir/console.log" 2>&1
}

# run_vm SERIES SUITES: boots Debian's newest SERIES kernel and runs the suites in it
run_vm() {
  local series=$1 suites=$2 pkg kdir moddir initrd dir start boot rc tmo
  pkg=$(kernel_package "$series" amd64)
  [ -n "$pkg" ] || { echo "no linux-image-$series.*-amd64 in ${SUITE_OF[$series]}"; return 1; }
  start=$(now)
  kdir=$(fetch_unpack "$pkg") || return 1
  moddir=$(modules_dir "$kdir")
  initrd=$KPR_MATRIX_CACHE/initrd-$(basename "$moddir").gz
  build_initramfs "$moddir" "$initrd" "$(command -v busybox)" scripts/vm/init \
    virtio_pci 9pnet_virtio 9p veth bridge sch_ingress cls_bpf
  dir=$results/$series
  rm -rf "$dir" && mkdir -p "$dir"
  say "$pkg (${SUITE_OF[$series]}): ${suites// /, } (fetch+initramfs $(elapsed "$start") s)"
  boot=$(now)
  # generous: under TCG the e2e suite alone takes many minutes
  tmo=$([ "${suites/e2e/}" != "$suites" ] && echo 2400 || echo 900)
  boot_vm "$kdir" "$initrd" "$dir" "$suites" "$tmo"
  rc=$?
  if [ ! -e "$dir/done" ] && have_kvm; then
    # KVM passed the probe, yet the VM died before reporting: from here on TCG, without e2e
    # (hours under TCG)
    say "$series: qemu with KVM ended (exit $rc) without results; once more under TCG"
    mv "$dir/console.log" "$dir/console-kvm.log"
    export KPR_MATRIX_KVM=0
    suites=${suites/ e2e/}
    boot=$(now)
    boot_vm "$kdir" "$initrd" "$dir" "$suites" 900
    rc=$?
  fi
  [ -e "$dir/done" ] || echo "vm failed 0 1 0 $(elapsed "$boot") qemu-exit-$rc-without-results(see-$dir/console.log)" >>"$dir/results"
  timings+=("$series ($pkg): boot+suites $(elapsed "$boot") s, $(awk '{printf "%s %s s; ", $1, $6}' "$dir/results")")
}

[ -n "$host_suites" ] && run_host $host_suites
papt_ok=1
apt_setup || papt_ok=0
for k in $kernels; do
  s=${KPR_MATRIX_VM_SUITES:-probe load bpf}
  case " $full " in *" $k "*) s="$s e2e" ;; esac
  run_vm "$k" "$s"
done

if [ "$arm64" = 1 ]; then
  start=$(now)
  bash scripts/arm64-smoke.sh --results "$results/arm64" >&2
  timings+=("arm64 smoke: $(elapsed "$start") s")
fi

[ "$readme" = 1 ] && [ -z "$markdown" ] && markdown=$results/requirements.md
dirs=()
[ -n "$host_suites" ] && dirs+=("$results/host")
for k in $kernels; do dirs+=("$results/$k"); done
[ "$arm64" = 1 ] && dirs+=("$results/arm64")
echo
bun scripts/vm/report.ts ${markdown:+--markdown "$markdown"} "${dirs[@]}"
status=$?
if [ "$readme" = 1 ] && [ -s "$markdown" ]; then
  awk -v md="$markdown" '
    /<!-- kernel-matrix:begin -->/ { print; while ((getline l < md) > 0) print l; skip = 1; next }
    /<!-- kernel-matrix:end -->/ { skip = 0 }
    !skip' README.md >README.md.new && mv README.md.new README.md
  say "README.md: requirements tables updated from this run"
fi
echo
echo "timings:"
printf '  %s\n' "${timings[@]}" "total: $(elapsed "$total_start") s"
tail -1 "$results/summary"
exit "$status"
