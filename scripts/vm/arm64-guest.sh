#!/bin/bash
# Stage 2 of the arm64 smoke VM (scripts/arm64-smoke.sh), run with the arm64 userland: kpr
# version, kpr bpf probe, kpr apply of examples/demo on the demo's namespaces, one ClusterIP
# request from the node's cgroup (socket LB) and one NodePort request from the client (tc).
#   results lines as in scripts/vm/guest.sh: "<step> <passed|failed> 1|0 0|1 0 <seconds> <reason>"
set -u
out=/run/kpr-matrix
/bin/busybox mkdir -p /run/bb && /bin/busybox --install -s /run/bb
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/run/bb HOME=/root
repo=$(sed -n 's/.*kpr\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/netns
ip link set lo up
uname -r >"$out/kernel"
: >"$out/results"
KPR=$repo/dist/kpr-linux-arm64
t0() { date +%s.%N 2>/dev/null || date +%s; }
secs() { awk -v a="$1" -v b="$(t0)" 'BEGIN { printf "%.1f", b - a }'; }
# step NAME CMD...: runs CMD, logs to NAME.log, records the verdict
step() {
  local name=$1 start
  shift
  start=$(t0)
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "$name passed 1 0 0 $(secs "$start") -" >>"$out/results"
  else
    echo "$name failed 0 1 0 $(secs "$start") exit-$rc" >>"$out/results"
  fi
}
finish() { echo done >"$out/done"; sync; echo o >/proc/sysrq-trigger; sleep 10; }
cd "$repo" || { echo "vm failed 0 1 0 0 no-repo-$repo" >>"$out/results"; finish; }

step version "$KPR" version
step probe "$KPR" bpf probe

. scripts/_demo-topology.sh
P=kd-
NODE=${P}node
work=$(mktemp -d)
demo_topology_up "$P" >"$out/topology.log" 2>&1
cat >"$work/pod-server.ts" <<'TS'
const name = process.argv[2] ?? "pod";
Bun.serve({ hostname: "0.0.0.0", port: 80, fetch: () => new Response(`${name}\n`) });
console.log("ready");
TS
# the client: Bun's fetch through the same binary (busybox's static wget segfaults in this guest)
cat >"$work/get.ts" <<'TS'
const r = await fetch(process.argv[2]!, { signal: AbortSignal.timeout(20_000) });
process.stdout.write(await r.text());
TS
for pod in "${DEMO_PODS[@]}"; do
  name=${pod%% *}
  BUN_BE_BUN=1 ip netns exec "$P$name" "$KPR" "$work/pod-server.ts" "$name" >"$work/$name.log" 2>&1 &
done
mkdir -p /sys/fs/cgroup/kd
cat >"$work/config.yaml" <<YAML
devices: [veth0]
nodeName: node-1
bpf: { root: /sys/fs/bpf/kd }
cgroup: { root: /sys/fs/cgroup/kd }
YAML
# waits for every pod server (JavaScriptCore under emulation starts slowly)
pods_ready() {
  local pod
  for _ in $(seq 600); do
    for pod in "${DEMO_PODS[@]}"; do grep -q ready "$work/${pod%% *}.log" || continue 2; done
    return 0
  done
  return 1
}
wait_pods() { for _ in $(seq 300); do pods_ready && return 0; sleep 1; done; cat "$work"/*.log; return 1; }
step pods wait_pods
step apply nsenter --net="/run/netns/$NODE" "$KPR" apply -f examples/demo --config "$work/config.yaml"
# answer: the body when a demo pod answered, else the exit status of the client
answered() { local body rc; body=$("$@" 2>&1); rc=$?; echo "$body"; [ "$rc" -eq 0 ] && echo "$body" | grep -qE '^pod-(a|b)$'; }
clusterip() {
  nsenter --net="/run/netns/$NODE" "$KPR" service list --config "$work/config.yaml"
  answered sh -c "echo \$\$ >/sys/fs/cgroup/kd/cgroup.procs && exec nsenter --net=/run/netns/kd-node env BUN_BE_BUN=1 $KPR $work/get.ts http://10.96.0.80:80/"
}
nodeport() { answered ip netns exec ${P}client env BUN_BE_BUN=1 "$KPR" "$work/get.ts" http://192.168.50.2:30080/; }
step clusterip clusterip
step nodeport nodeport
nsenter --net="/run/netns/$NODE" "$KPR" cleanup --config "$work/config.yaml" >>"$out/apply.log" 2>&1
finish
