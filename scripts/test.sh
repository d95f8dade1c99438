#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/bootstrap.sh), builds dist/kpr,
# type-checks, lints, and runs every test (the privileged end-to-end ones too when run as root).
# Ends with a plain "N passed, N failed" line; exit status 0 only when nothing failed.
#   scripts/test.sh [bun test args...]     e.g. scripts/test.sh test/lb
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH"

passed=0
failed=0
step() { # name, command...
  local name=$1; shift
  printf '\n\033[1m== %s\033[0m\n' "$name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

step "build (bpf objects + dist/kpr)" bun build.ts
step "typecheck (tsc --noEmit)" tsc --noEmit
step "lint and format (biome check)" biome check .

# What the test harness (test/harness/netns.ts, prefix kt + 6 chars) creates: namespaces, bpffs
# dirs, cgroups; and kpr programs attached to interfaces (tests run kpr in namespaces they
# created, all gone by the end: one still attached was left behind, or is on the host's own
# interfaces). Compared before/after, so a concurrent run's live topology is not blamed.
leftovers() {
  {
    {
      ip netns list 2>/dev/null | awk '{print "netns " $1}'
      ls /sys/fs/bpf 2>/dev/null | sed 's/^/bpffs /'
      for m in $(awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") print $5; break }}' /proc/self/mountinfo); do
        ls "$m" 2>/dev/null | sed 's/^/cgroup /'
      done
    } | grep -E ' (kt[a-z0-9]{6}(-|$)|kpr-explain-)'
    bun scripts/kpr-attachments.ts 2>/dev/null | sed 's/^/attached program: /'
  } | sort -u
}
before=$(leftovers)

printf '\n\033[1m== bun test\033[0m\n'
log=$(mktemp)
# --timeout: bun 1.4.4 ignores bunfig's [test] timeout, and its 5 s default is too short for the
# end-to-end tests (a test still ends as soon as it is done).
bun test --timeout 120000 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
left=$(comm -13 <(printf '%s\n' "$before") <(leftovers) | sed '/^$/d')
if [ -n "$left" ]; then
  echo "FAILED: tests left these behind:"
  printf '  %s\n' "$left"
  failed=$((failed + 1))
fi
pass=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
fail=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
skip=$(grep -E '^ *[0-9]+ skip$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
rm -f "$log"
passed=$((passed + pass))
failed=$((failed + fail))
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then
  echo "FAILED: bun test exited $status with no failing test (no test file matched, or a crash)"
  failed=$((failed + 1))
fi
echo
if [ "$skip" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skip skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
