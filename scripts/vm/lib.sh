# Shared helpers of scripts/kernel-matrix.sh and scripts/arm64-smoke.sh (sourced, not run).
# Debian kernel packages and arm64 libraries come through apt with a private configuration (own
# sources, state, cache and architecture list), so the host's apt setup is never changed; they
# are unpacked with dpkg-deb -x under $KPR_MATRIX_CACHE and never installed.

KPR_MATRIX_CACHE=${KPR_MATRIX_CACHE:-/var/cache/kpr-matrix}
VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '\033[1mmatrix:\033[0m %s\n' "$*" >&2; }
die() { printf 'matrix: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Debian suite of each kernel series of the matrix
declare -A SUITE_OF=([5.10]=bullseye [6.1]=bookworm [6.12]=trixie)

# apt with the private configuration; arguments after the first go to apt-get/apt-cache
papt() {
  local tool=$1; shift
  local d=$KPR_MATRIX_CACHE/apt
  "$tool" -o Dir::Etc::sourcelist="$d/sources.list" -o Dir::Etc::sourceparts=- \
    -o Dir::Etc::preferencesparts="$d/preferences.d" -o Dir::State="$d/state" \
    -o Dir::State::status="$d/status" -o Dir::Cache="$d/cache" \
    -o APT::Architecture="${PAPT_ARCH:-amd64}" -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 \
    -o Acquire::Languages=none -o Debug::NoLocking=true -q "$@"
}

# Writes the private apt config and refreshes its package lists (at most once an hour)
apt_setup() {
  local d=$KPR_MATRIX_CACHE/apt mirror
  mkdir -p "$d/preferences.d" "$d/state/lists/partial" "$d/cache/archives/partial"
  : >"$d/status.new" && mv "$d/status.new" "$d/status"
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mirror=${KPR_MATRIX_MIRROR:-${mirror:-http://deb.debian.org/debian}}
  {
    for s in bullseye bookworm trixie; do
      echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $s main"
    done
  } >"$d/sources.list"
  if [ -z "$(find "$d/state/lists" -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    say "apt: refreshing package lists of bullseye, bookworm, trixie (private config under $d)"
    papt apt-get update >/dev/null || die "apt-get update (private config $d) failed"
  fi
}

# Newest linux-image-<series>.*-<arch> package name (the plain flavour: no rt, cloud, 16k, dbg)
kernel_package() { # series arch
  local series=$1 arch=$2
  papt apt-cache pkgnames "linux-image-$series." 2>/dev/null |
    grep -E "^linux-image-${series//./\\.}\.[0-9]+(-[0-9]+|\+deb[0-9]+)-$arch\$" | sort -V | tail -1
}

# Downloads (into the cache) and unpacks a package; prints the unpack dir
fetch_unpack() { # package[:arch]
  local pkg=$1 debs=$KPR_MATRIX_CACHE/debs deb dir
  mkdir -p "$debs"
  deb=$(ls "$debs/${pkg%%:*}"_*.deb 2>/dev/null | sort -V | tail -1)
  if [ -z "$deb" ]; then
    (cd "$debs" && papt apt-get download "$pkg" >/dev/null) || die "apt-get download $pkg failed"
    deb=$(ls "$debs/${pkg%%:*}"_*.deb | sort -V | tail -1)
  fi
  dir=$KPR_MATRIX_CACHE/unpacked/$(basename "$deb" .deb)
  if [ ! -e "$dir/.done" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
    touch "$dir/.done"
  fi
  echo "$dir"
}

# The modules directory of an unpacked kernel package (lib/modules or usr/lib/modules)
modules_dir() { # unpackdir
  local m
  m=$(ls -d "$1"/lib/modules/*/ "$1"/usr/lib/modules/*/ 2>/dev/null | head -1)
  [ -n "$m" ] || die "no modules directory in $1"
  echo "${m%/}"
}

# Module files (relative to moddir) for the wanted module names, dependencies first. Debian's
# packages ship no modules.dep (depmod runs at install), so dependencies come from each module's
# own "depends=" modinfo field. Names that are built in or absent are left out.
module_closure() { # moddir name...
  local moddir=$1; shift
  declare -A path=() seen=()
  local f n
  while IFS= read -r f; do
    n=${f##*/}; n=${n%%.ko*}; path[${n//-/_}]=$f
  done < <(cd "$moddir" && find kernel -name '*.ko*')
  visit() {
    local n=${1//-/_} d deps
    [ -n "${seen[$n]:-}" ] && return
    seen[$n]=1
    [ -n "${path[$n]:-}" ] || return 0
    deps=$(modinfo_field "$moddir/${path[$n]}" depends)
    for d in ${deps//,/ }; do visit "$d"; done
    echo "${path[$n]}"
  }
  for n in "$@"; do visit "$n"; done
}

# One field of a module's .modinfo section (compressed modules too)
modinfo_field() { # file field
  case "$1" in
    *.xz) xz -dc "$1" ;;
    *.zst) zstd -qdc "$1" ;;
    *.gz) gzip -dc "$1" ;;
    *) cat "$1" ;;
  esac | tr '\0' '\n' | sed -n "s/^$2=//p" | head -1
}

# Builds an initramfs (busybox, the stage-1 init, decompressed modules and their load order)
build_initramfs() { # moddir out.cpio.gz busybox init modules...
  local moddir=$1 out=$2 bb=$3 init=$4; shift 4
  local tmp f name
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/modules" "$tmp/newroot" "$tmp/proc" "$tmp/sys" "$tmp/dev"
  cp "$bb" "$tmp/bin/busybox"
  cp "$init" "$tmp/init" && chmod 755 "$tmp/init"
  : >"$tmp/modules/order"
  for f in $(module_closure "$moddir" "$@"); do
    name=$(basename "$f")
    case "$name" in
      *.xz) xz -dc "$moddir/$f" >"$tmp/modules/${name%.xz}"; name=${name%.xz} ;;
      *.zst) zstd -qdc "$moddir/$f" >"$tmp/modules/${name%.zst}"; name=${name%.zst} ;;
      *.gz) gzip -dc "$moddir/$f" >"$tmp/modules/${name%.gz}"; name=${name%.gz} ;;
      *) cp "$moddir/$f" "$tmp/modules/$name" ;;
    esac
    echo "$name" >>"$tmp/modules/order"
  done
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  rm -rf "$tmp"
}

# Whether qemu can use KVM here (else TCG: much slower, same results). A writable /dev/kvm is not
# enough: some hosts (nested virtualisation) hand out a /dev/kvm whose vCPUs refuse MSRs that
# `-cpu host` sets, and qemu aborts at its first reset ("failed to set MSR 0x10a", exit 134). So
# the first call starts qemu with KVM, stopped before the guest runs (-S; the reset has happened
# by then), and quits it from the monitor; the answer is kept in KPR_MATRIX_KVM (exported, so
# subshells and child scripts reuse it). KPR_MATRIX_NO_KVM=1 forces TCG.
kvm_probe() {
  local q
  [ "${KPR_MATRIX_NO_KVM:-0}" != 1 ] && [ -w /dev/kvm ] || return 1
  q=qemu-system-$(uname -m)
  command -v "$q" >/dev/null || return 2 # not installed yet: no answer to keep
  echo quit | timeout 60 "$q" -enable-kvm -cpu host -m 64 -nodefaults -display none -no-reboot -S \
    -monitor stdio >/dev/null 2>&1
}
have_kvm() {
  if [ -z "${KPR_MATRIX_KVM:-}" ]; then
    kvm_probe
    case $? in
      0) export KPR_MATRIX_KVM=1 ;;
      2) return 1 ;;
      *)
        export KPR_MATRIX_KVM=0
        [ -e /dev/kvm ] && [ "${KPR_MATRIX_NO_KVM:-0}" != 1 ] &&
          say "/dev/kvm is there but qemu cannot start a vCPU with it: using TCG"
        ;;
    esac
  fi
  [ "$KPR_MATRIX_KVM" = 1 ]
}
accel_args() { # arch-of-guest
  if [ "$1" = "$(uname -m)" ] && have_kvm; then echo "-enable-kvm -cpu host"; else echo "-accel tcg -cpu max"; fi
}
