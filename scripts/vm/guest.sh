#!/bin/bash
# Stage 2 of a matrix VM, run with the host's userland (read-only 9p root): mounts what kpr and
# its tests need, runs the suites named by kpr.suites= on the kernel command line from the repo at
# kpr.repo=, writes each suite's log and a results file to /run/kpr-matrix and powers off.
#   results lines: "<suite> <passed|failed|skipped> <pass-count> <fail-count> <skip-count> <seconds> <reason>"
set -u
if [ "${1:-}" = --host ]; then
  # the same suites on the host's kernel (scripts/kernel-matrix.sh): nothing to mount, no power-off
  out=$KPR_MATRIX_OUT repo=$KPR_MATRIX_REPO suites=$KPR_MATRIX_SUITES host=1
else
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
  # the harness's deadlines (process start-up, polls) scaled for an emulated CPU
  [ -w /dev/kvm ] || export KPR_TEST_TIME_SCALE=${KPR_TEST_TIME_SCALE:-$(sed -n 's/.*kpr\.timescale=\([0-9]*\).*/\1/p' /proc/cmdline)}
  out=/run/kpr-matrix host=0
  arg() { sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
  mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
  mount -t bpf bpf /sys/fs/bpf
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  mkdir -p /run/netns
  ip link set lo up
  hostname "kpr-matrix-$(uname -r | cut -d- -f1)"
  repo=$(arg kpr.repo)
  suites=$(arg kpr.suites | tr , ' ')
  uname -r >"$out/kernel"
  : >"$out/results"
fi
off() { [ "$host" = 1 ] && return; sync; echo o >/proc/sysrq-trigger; sleep 10; }
cd "$repo" || { echo "kpr-matrix: no repo $repo" >"$out/error"; off; exit 1; }
export PATH="$repo/node_modules/.bin:$PATH"
t0() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# bun test: counts from its summary lines
bun_suite() { # name, paths...
  local name=$1 start log st pass fail skip verdict reason=-
  shift
  start=$(t0)
  log="$out/$name.log"
  bun test --timeout 300000 "$@" >"$log" 2>&1
  st=$?
  pass=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  fail=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  skip=$(grep -E '^ *[0-9]+ skip$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  if [ "$st" -eq 0 ] && [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]; then verdict=passed; else verdict=failed; fi
  [ "$st" -ne 0 ] && [ "$fail" -eq 0 ] && reason="bun-test-exited-$st"
  echo "$name $verdict ${pass:-0} ${fail:-0} ${skip:-0} $(secs "$start") $reason" >>"$out/results"
}

for s in $suites; do
  case "$s" in
    probe)
      start=$(t0)
      dist/kpr bpf probe -o json >"$out/probe.json" 2>"$out/probe.log"
      st=$?
      dist/kpr bpf probe >>"$out/probe.log" 2>&1
      # exit 1 = something the default config needs is missing: that is the probe's verdict
      if [ "$st" -eq 0 ]; then v="passed 1 0"; else v="failed 0 1"; fi
      echo "probe $v 0 $(secs "$start") -" >>"$out/results"
      ;;
    load)
      start=$(t0)
      bun scripts/vm/load-check.ts >"$out/load.json" 2>"$out/load.log"
      st=$?
      p=$(grep -c '"verdict":"accepted"' "$out/load.json")
      f=$(grep -c '"verdict":"rejected"' "$out/load.json")
      sk=$(grep -c '"verdict":"skipped"' "$out/load.json")
      if [ "$st" -eq 0 ] && [ "$f" -eq 0 ] && [ "$p" -gt 0 ]; then v=passed; else v=failed; f=$((f + (p == 0))); fi
      echo "load $v $p $f $sk $(secs "$start") -" >>"$out/results"
      ;;
    bpf) bun_suite bpf test/bpf ;;
    e2e) bun_suite e2e test/e2e ;;
    *) echo "$s failed 0 1 0 0 unknown-suite" >>"$out/results" ;;
  esac
done
echo done >"$out/done"
off
