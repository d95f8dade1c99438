#!/usr/bin/env bash
# kpr demo: a small cluster in network namespaces (a client, node-1 and four pods), programmed by
# kpr from the manifests in examples/demo/, then requests to the ClusterIP (from a process in the
# node's cgroup: socket LB) and to the NodePort (from the client: tc on the node's device), each
# answered by one of the pods. Removes everything it created on exit, also when interrupted.
#   sudo bash scripts/demo.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REQUESTS=${1:-20}

say() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\033[1;31mdemo: error:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo bash scripts/demo.sh): the demo creates network namespaces and loads eBPF programs"
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "REQUESTS must be a positive number (got '$REQUESTS')"

# shellcheck source=scripts/_demo-topology.sh
. scripts/_demo-topology.sh

P=kpr-demo-                     # prefix of every namespace the demo creates
NODE=${P}node
CLIENT=${P}client
BPF_ROOT=/sys/fs/bpf/kpr-demo   # the demo's kpr state (bpf.root)
WORK=""                         # temp dir: config, pod server, logs
CG=""                           # the demo's cgroup (cgroup.root): a child of a cgroup2 mount
CG_MOUNT=""                     # set when the demo had to mount cgroup2 itself
KPR=$REPO/dist/kpr
BUN=$REPO/node_modules/.bin/bun

cleanup() {
  local rc=$? left
  trap '' INT TERM
  set +e
  say "cleaning up"
  if [ -x "$KPR" ] && [ -n "$WORK" ] && [ -f "$WORK/config.yaml" ] && [ -d "$BPF_ROOT" ] \
    && [ -e "/run/netns/$NODE" ]; then
    nsenter --net="/run/netns/$NODE" "$KPR" cleanup --config "$WORK/config.yaml" 2>&1 | sed 's/^/    /'
  fi
  # Unpinning the links detaches the programs even if `kpr cleanup` could not run.
  rm -rf "$BPF_ROOT"
  demo_topology_down "$P"
  if [ -n "$CG" ] && [ -d "$CG" ]; then
    for _ in $(seq 50); do
      # shellcheck disable=SC2046
      kill -9 $(cat "$CG/cgroup.procs" 2>/dev/null) 2>/dev/null
      rmdir "$CG" 2>/dev/null && break
      sleep 0.1
    done
  fi
  if [ -n "$CG_MOUNT" ]; then umount "$CG_MOUNT" && rmdir "$CG_MOUNT"; fi
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
  left=$(demo_namespaces "$P" | while read -r ns; do [ -e "/run/netns/$ns" ] && echo "$ns"; done)
  if [ -n "$left" ] || [ -e "$BPF_ROOT" ] || { [ -n "$CG" ] && [ -e "$CG" ]; }; then
    printf 'demo: warning: could not remove everything: %s %s %s\n' "$left" "$BPF_ROOT" "$CG" >&2
  else
    info "removed the namespaces ${P}*, $BPF_ROOT and the demo cgroup"
  fi
  exit "$rc"
}
trap cleanup EXIT
# A closed stdout (`demo.sh | head`) must not kill the script before its cleanup: with SIGPIPE
# ignored, the failed write ends the script through `set -e`, and the EXIT trap runs.
trap '' PIPE
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

say "bootstrap (scripts/bootstrap.sh)"
bash scripts/bootstrap.sh

say "build (bun build.ts)"
"$BUN" build.ts
[ -x "$KPR" ] || die "build did not produce dist/kpr"

# Leftovers of an earlier run that was killed with SIGKILL: start clean.
demo_topology_down "$P"
rm -rf "$BPF_ROOT"

say "cgroup v2 for socket load-balancing"
cg2=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' \
  /proc/self/mountinfo)
if [ -z "$cg2" ]; then
  CG_MOUNT=/run/kpr-demo-cgroup2
  mkdir -p "$CG_MOUNT"
  mount -t cgroup2 none "$CG_MOUNT"
  cg2=$CG_MOUNT
fi
CG=$cg2/kpr-demo
mkdir -p "$CG"
info "kpr attaches its socket hooks to $CG only: processes outside it are not affected"

say "cluster in network namespaces"
demo_topology_up "$P"
cat <<EOF
    ${P}client  veth0 192.168.50.1 ── veth0 192.168.50.2  ${P}node (node-1; kpr's device: veth0)
                                      vpa ── 10.244.1.10  ${P}pod-a     (my-nginx)
                                      vpb ── 10.244.1.11  ${P}pod-b     (my-nginx)
                                      vpe ── 10.244.1.20  ${P}echo      (echo)
                                      vpd ── 10.244.1.30  ${P}dns-echo  (dns-echo)
EOF

WORK=$(mktemp -d /tmp/kpr-demo.XXXXXX)
# One tiny server per pod: HTTP on 80 and 8080 answering "<pod> (saw client <addr>)", UDP echo on
# 5353 answering "<pod>: <request>".
cat >"$WORK/pod-server.ts" <<'TS'
const name = process.argv[2] ?? "pod";
for (const port of [80, 8080]) {
  Bun.serve({
    hostname: "0.0.0.0",
    port,
    fetch(req, server) {
      return new Response(`${name} (saw client ${server.requestIP(req)?.address})\n`);
    },
  });
}
await Bun.udpSocket({
  hostname: "0.0.0.0",
  port: 5353,
  socket: {
    data(sock, buf, port, addr) {
      sock.send(`${name}: ${buf.toString().trim()}\n`, port, addr);
    },
  },
});
console.log("ready");
TS
for pod in "${DEMO_PODS[@]}"; do
  name=${pod%% *}
  ip netns exec "$P$name" "$BUN" "$WORK/pod-server.ts" "$name" >"$WORK/$name.log" 2>&1 &
  disown # killed with its namespace at exit; no "Killed" job notices
done
for pod in "${DEMO_PODS[@]}"; do
  name=${pod%% *}
  for _ in $(seq 100); do grep -q ready "$WORK/$name.log" && break; sleep 0.1; done
  grep -q ready "$WORK/$name.log" || die "server in pod $name did not start: $(cat "$WORK/$name.log")"
done
info "every pod serves HTTP on :80 and :8080 and UDP echo on :5353, answering with its name"

say "config: examples/config.yaml with the demo's device, bpf.root and cgroup.root"
"$BUN" -e '
  import YAML from "yaml";
  const [src, dst, bpfRoot, cg] = process.argv.slice(1);
  const c = YAML.parse(await Bun.file(src).text()) ?? {};
  c.devices = ["veth0"];
  c.nodeName = "node-1";
  c.bpf = { ...(c.bpf ?? {}), root: bpfRoot };
  c.cgroup = { ...(c.cgroup ?? {}), root: cg };
  await Bun.write(dst, YAML.stringify(c));
' examples/config.yaml "$WORK/config.yaml" "$BPF_ROOT" "$CG"
sed 's/^/    /' "$WORK/config.yaml"

kpr() { nsenter --net="/run/netns/$NODE" "$KPR" "$@" --config "$WORK/config.yaml"; }
# in_cgroup CMD...: runs CMD on node-1 as a process of the demo cgroup (so socket LB applies).
in_cgroup() {
  sh -c 'echo $$ >"$1/cgroup.procs" && shift 2 && exec nsenter --net="/run/netns/$0" "$@"' \
    "$NODE" "$CG" _ "$@"
}

say "kpr apply -f examples/demo"
kpr apply -f examples/demo

# The plan's frontends as "TYPE SERVICE ADDRESS PORT PROTO" lines.
kpr apply -f examples/demo --dry-run -o json >"$WORK/plan.json"
"$BUN" -e '
  const plan = await Bun.file(process.argv[1]).json();
  for (const e of plan) console.log(e.type, e.service, e.frontend.address, e.frontend.port, e.frontend.protocol);
' "$WORK/plan.json" >"$WORK/frontends"
frontend() { # TYPE SERVICE PROTO [ADDRESS] -> "address port"
  awk -v t="$1" -v s="$2" -v p="$3" -v a="${4:-}" \
    '$1 == t && $2 == s && $5 == p && (a == "" || $3 == a) { print $3, $4; exit }' "$WORK/frontends"
}
read -r nginx_ip nginx_port < <(frontend ClusterIP default/my-nginx TCP) || die "no ClusterIP for my-nginx in the plan"
read -r np_addr np_port < <(frontend NodePort default/my-nginx TCP 192.168.50.2) || die "no NodePort for my-nginx in the plan"
read -r echo_ip echo_port < <(frontend ClusterIP default/echo TCP) || die "no ClusterIP for echo in the plan"
read -r dns_ip dns_port < <(frontend ClusterIP default/dns-echo UDP) || die "no ClusterIP for dns-echo in the plan"

# tally: shows the first answers and how often each pod answered (the first word of a line).
tally() {
  local out
  out=$(cat)
  printf '%s\n' "$out" | head -2 | sed 's/^/    e.g. /'
  printf '%s\n' "$out" | awk '
    /^(pod-[ab]|echo|dns-echo)[ :]/ { sub(/:$/, "", $1); n[$1]++; next }
    { failed++ }
    END {
      for (p in n) printf "    %-9s answered %d\n", p, n[p]
      if (failed) printf "    %d requests failed\n", failed
    }' | sort
}

# http_requests COUNT cgroup|NETNS URL: COUNT curls, one answer (or error) per line.
http_requests() {
  local count=$1 where=$2 url=$3
  for _ in $(seq "$count"); do
    if [ "$where" = cgroup ]; then
      in_cgroup curl -sS --max-time 2 "$url" 2>&1 || true
    else
      ip netns exec "$where" curl -sS --max-time 2 "$url" 2>&1 || true
    fi
  done
}

say "$REQUESTS × ClusterIP http://$nginx_ip:$nginx_port (my-nginx) from a process in node-1's cgroup"
info "(socket LB: connect() is sent straight to a pod; no packet is translated)"
http_requests "$REQUESTS" cgroup "http://$nginx_ip:$nginx_port/" | tally

say "$REQUESTS × NodePort http://$np_addr:$np_port (my-nginx) from the client namespace"
info "(tc on veth0: DNAT on ingress, reversed on egress; the pods see the client's own address)"
http_requests "$REQUESTS" "$CLIENT" "http://$np_addr:$np_port/" | tally

say "3 × ClusterIP http://$echo_ip:$echo_port (echo; targetPort is the named port http) from node-1's cgroup"
http_requests 3 cgroup "http://$echo_ip:$echo_port/" | tally

say "3 × UDP $dns_ip:$dns_port (dns-echo → :5353) from node-1's cgroup"
for i in 1 2 3; do
  echo "hello $i" | in_cgroup socat -T1 - "UDP4:$dns_ip:$dns_port" 2>&1 || true
done | tally

say "kpr service list"
kpr service list

say "kpr explain --local: what the socket hook does with a connect() to my-nginx (no packet is sent)"
kpr explain --local --dst "$nginx_ip:$nginx_port"

say "kpr status --verbose"
kpr status --verbose

say "kpr cleanup"
kpr cleanup
say "done"
